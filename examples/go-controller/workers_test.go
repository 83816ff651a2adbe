package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// A fake API server for NewResources in one namespace: list (with a name field selector),
// watch (events pushed by the test; a resourceVersion older than `compacted` answers 410),
// and PUT of /status with the resourceVersion and uid preconditions. Every successful status
// write is recorded.

type fakeAPI struct {
	mu        sync.Mutex
	rv        int
	objects   map[string]object
	compacted int
	watchers  []chan string
	watches   chan string // the resourceVersion of each watch opened
	writes    []string    // name@generation of each successful status write
	written   chan string
	puts      int
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{objects: map[string]object{}, watches: make(chan string, 16), written: make(chan string, 64)}
}

// put creates or changes an object (bumping generation when spec changes) and tells watchers.
func (f *fakeAPI) put(name, foo string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	old, exists := f.objects[name]
	gen := int64(1)
	kind := "ADDED"
	var status interface{}
	if exists {
		g, _ := old.generation()
		gen, kind, status = g+1, "MODIFIED", old["status"]
	}
	obj := object{
		"apiVersion": group + "/" + apiVer, "kind": "NewResource",
		"metadata": map[string]interface{}{
			"name": name, "namespace": "ns", "uid": "uid-" + name, "resourceVersion": strconv.Itoa(f.rv),
			"generation": json.Number(strconv.FormatInt(gen, 10)), "managedFields": []interface{}{},
		},
		"spec": map[string]interface{}{"foo": foo},
	}
	if status != nil {
		obj["status"] = status
	}
	f.objects[name] = roundTrip(obj)
	f.notify(kind, f.objects[name])
}

func (f *fakeAPI) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	obj := f.objects[name]
	delete(f.objects, name)
	f.notify("DELETED", obj)
}

func (f *fakeAPI) notify(kind string, obj object) {
	line, _ := json.Marshal(map[string]interface{}{"type": kind, "object": obj})
	for _, w := range f.watchers {
		w <- string(line)
	}
}

func roundTrip(o object) object {
	b, _ := json.Marshal(o)
	var out object
	_ = decodeJSON(b, &out)
	return out
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	base := collectionPath("ns")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base && r.URL.Query().Get("watch") == "1":
		rv, _ := strconv.Atoi(r.URL.Query().Get("resourceVersion"))
		events := make(chan string, 64)
		f.mu.Lock()
		compacted := rv < f.compacted
		if !compacted {
			f.watchers = append(f.watchers, events)
		}
		f.mu.Unlock()
		f.watches <- r.URL.Query().Get("resourceVersion")
		w.WriteHeader(http.StatusOK)
		if compacted {
			fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}`)
			return
		}
		w.(http.Flusher).Flush()
		for {
			select {
			case line := <-events:
				fmt.Fprintln(w, line)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	case r.Method == http.MethodGet && r.URL.Path == base:
		f.mu.Lock()
		var items []object
		for name, o := range f.objects {
			if sel := r.URL.Query().Get("fieldSelector"); sel != "" && sel != "metadata.name="+name {
				continue
			}
			items = append(items, o)
		}
		body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"resourceVersion": strconv.Itoa(f.rv)}, "items": items})
		f.mu.Unlock()
		w.Write(body)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, base+"/") && strings.HasSuffix(r.URL.Path, "/status"):
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, base+"/"), "/status")
		body, _ := io.ReadAll(r.Body)
		var sent object
		_ = decodeJSON(body, &sent)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.puts++
		cur, ok := f.objects[name]
		if _, managed := sent.meta()["managedFields"]; managed {
			http.Error(w, `{"message":"managedFields sent"}`, http.StatusBadRequest)
			return
		}
		if !ok || sent.uid() != cur.uid() || sent.resourceVersion() != cur.resourceVersion() {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"kind":"Status","code":409,"reason":"Conflict","message":"the object has been modified"}`)
			return
		}
		f.rv++
		cur["status"] = sent["status"]
		cur.meta()["resourceVersion"] = strconv.Itoa(f.rv)
		f.objects[name] = roundTrip(cur)
		gen, _ := cur.generation()
		f.writes = append(f.writes, fmt.Sprintf("%s@%d", name, gen))
		f.written <- fmt.Sprintf("%s@%d", name, gen)
		f.notify("MODIFIED", f.objects[name])
		out, _ := json.Marshal(f.objects[name])
		w.Write(out)
	default:
		http.NotFound(w, r)
	}
}

// harness runs windows of a workers against the fake API under a gate the test controls.
type harness struct {
	api     *fakeAPI
	gate    *leaderclient.Gate
	state   *leaderclient.GateState
	workers *workers
	logs    *syncWriter
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	api := newFakeAPI()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	kube, err := newKubeClient(apiAccess{Server: srv.URL}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	gate := leaderclient.NewGate()
	logs := &syncWriter{}
	log := newLogger(logs, "json")
	m := newMetrics()
	return &harness{
		api: api, gate: gate, state: leaderclient.NewGateState(time.Second), logs: logs,
		workers: &workers{
			kube: kube, namespace: "ns", concurrency: 2, metrics: m, log: log,
			reconciler: &reconciler{kube: kube, gate: gate, metrics: m, log: log, backoff: newBackoff()},
		},
	}
}

// syncWriter collects log lines from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// grant publishes a long grant in term t.
func (h *harness) grant(t int64) {
	ticket := h.state.PollSent(time.Now())
	h.state.OnAnswer(ticket, leaderclient.LeaderStatus{IsLeader: true, Term: &t, ValidForMs: 60_000})
	h.gate.Publish(h.state.View())
}

func (h *harness) revoke() {
	h.state.OnStreamLost()
	h.gate.Publish(h.state.View())
}

func expectWrite(t *testing.T, api *fakeAPI, want string) {
	t.Helper()
	select {
	case got := <-api.written:
		if got != want {
			t.Fatalf("write %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no status write (want %s)", want)
	}
}

func expectWatch(t *testing.T, api *fakeAPI) string {
	t.Helper()
	select {
	case rv := <-api.watches:
		return rv
	case <-time.After(10 * time.Second):
		t.Fatal("no watch opened")
		return ""
	}
}

func TestAWindowResyncsWritesEachGenerationOnceAndStopsWhenRevoked(t *testing.T) {
	h := newHarness(t)
	h.api.put("a", "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		leaderclient.RunWhileLeader(ctx, h.gate, h.workers.log, h.workers.runWindow)
		close(done)
	}()
	h.grant(3)
	// The list queues everything: a is written for generation 1.
	expectWrite(t, h.api, "a@1")
	waitLog(t, h.logs, `"status ready"`, 1)
	expectWatch(t, h.api)
	// A new object and a spec change arrive through the watch.
	h.api.put("b", "y")
	expectWrite(t, h.api, "b@1")
	h.api.put("a", "changed")
	expectWrite(t, h.api, "a@2")
	waitLog(t, h.logs, `"status ready"`, 3)
	// A deleted object is no error.
	h.api.remove("b")

	// The grant ends: the window closes; a change while paused is not written...
	h.revoke()
	waitLog(t, h.logs, `"message":"active window ended","term":3,"reason":"revoked"`, 1)
	h.api.put("a", "while-paused")
	// ...until the next window's full resync writes it.
	h.grant(4)
	expectWrite(t, h.api, "a@3")
	waitLog(t, h.logs, `"message":"status ready","object":"ns/a","term":4`, 1)
	cancel()
	<-done
	h.api.mu.Lock()
	defer h.api.mu.Unlock()
	if got := strings.Join(h.api.writes, " "); got != "a@1 b@1 a@2 a@3" {
		t.Fatalf("writes %s: each (object, generation) exactly once", got)
	}
	if !strings.Contains(h.logs.String(), `"message":"status ready","object":"ns/a","term":4`) {
		t.Fatalf("no status ready line with the term:\n%s", h.logs.String())
	}
}

// waitLog waits until n log lines contain needle (polling the condition, with a deadline).
func waitLog(t *testing.T, logs *syncWriter, needle string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), needle) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d log lines with %s in\n%s", n, needle, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestA410RelistsAndNoWriteLeavesWithoutAGrant(t *testing.T) {
	h := newHarness(t)
	h.api.put("a", "x")
	h.api.mu.Lock()
	h.api.compacted = 1 << 30 // every watch is too old
	h.api.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.grant(1)
	go h.workers.runWindow(ctx, leaderclient.Window{})
	expectWrite(t, h.api, "a@1")
	first := expectWatch(t, h.api)
	// 410: the window lists again (at once, or after a short backoff right after a list)
	// and watches from the new list's resourceVersion.
	second := expectWatch(t, h.api)
	if first == "" || second == "" {
		t.Fatal("watch without a resourceVersion")
	}
	h.api.mu.Lock()
	h.api.compacted = 0
	h.api.mu.Unlock()

	// The gate closes (the grant is gone) while the window's context is still live: the
	// reconciler refuses to write.
	h.revoke()
	r := h.workers.reconciler
	obj := h.api.objects["a"]
	delete(obj, "status")
	if _, _, err := r.reconcile(context.Background(), obj); err != errNotLeader {
		t.Fatalf("write without a grant: %v", err)
	}
}

func TestAConflictOnADeletedObjectIsGoneAndARealConflictIsRetried(t *testing.T) {
	h := newHarness(t)
	h.api.put("a", "x")
	h.grant(1)
	r := h.workers.reconciler
	h.api.mu.Lock()
	stale := roundTrip(h.api.objects["a"])
	h.api.mu.Unlock()
	h.api.put("a", "newer") // our copy is now stale
	out, _, err := r.reconcile(context.Background(), stale)
	var re *reconcileError
	if err == nil || !asReconcileError(err, &re) || re.kind != "conflict" || out != 0 {
		t.Fatalf("stale write: %v %v", out, err)
	}
	h.api.remove("a")
	out, _, err = r.reconcile(context.Background(), stale)
	if err != nil || out != gone {
		t.Fatalf("deleted: %v %v", out, err)
	}
	// An object already ready for its generation is not written.
	fresh := roundTrip(stale)
	fresh["status"] = map[string]interface{}{"ready": true, "observedGeneration": json.Number("1")}
	if out, _, err := r.reconcile(context.Background(), fresh); err != nil || out != unchanged {
		t.Fatalf("up to date: %v %v", out, err)
	}
	if h.api.puts != 2 {
		t.Fatalf("%d PUTs, want 2", h.api.puts)
	}
}

func asReconcileError(err error, out **reconcileError) bool {
	re, ok := err.(*reconcileError)
	*out = re
	return ok
}

func TestAWriteIsAbandonedWhenTheGrantEnds(t *testing.T) {
	hung := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-hung
	}))
	defer srv.Close()
	defer close(hung)
	kube, _ := newKubeClient(apiAccess{Server: srv.URL}, time.Minute)
	gate := leaderclient.NewGate()
	s := leaderclient.NewGateState(time.Second)
	term := int64(1)
	sent := time.Now()
	s.OnAnswer(s.PollSent(sent), leaderclient.LeaderStatus{IsLeader: true, Term: &term, ValidForMs: 200})
	gate.Publish(s.View())
	log := newLogger(io.Discard, "json")
	r := &reconciler{kube: kube, gate: gate, metrics: newMetrics(), log: log, backoff: newBackoff()}
	obj := roundTrip(object{"metadata": map[string]interface{}{"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "1"}})
	_, _, err := r.reconcile(context.Background(), obj)
	if err != errGrantExpired {
		t.Fatalf("got %v, want the grant to end the write", err)
	}
	if time.Since(sent) < 200*time.Millisecond {
		t.Fatal("abandoned before the grant ended")
	}
}

func TestBackoffDoublesToACapAndResets(t *testing.T) {
	b := newBackoff()
	var got []string
	for i := 0; i < 12; i++ {
		got = append(got, b.next("a").String())
	}
	if strings.Join(got, " ") != "200ms 400ms 800ms 1.6s 3.2s 6.4s 12.8s 25.6s 51.2s 1m0s 1m0s 1m0s" {
		t.Fatal(got)
	}
	if b.next("b") != backoffBase {
		t.Fatal("per object")
	}
	b.reset("a")
	if b.next("a") != backoffBase {
		t.Fatal("reset")
	}
}

func TestMetricsText(t *testing.T) {
	m := newMetrics()
	m.reconciled(time.Now(), "error", "conflict")
	m.apiError("newresources", "list", "403")
	m.setLeader(true)
	m.windowStarted()
	text := m.encode()
	for _, needle := range []string{
		`controller_reconcile_total{controller="newresource",result="error"} 1`,
		`controller_reconcile_total{controller="newresource",result="success"} 0`,
		`controller_reconcile_errors_total{controller="newresource",error_type="conflict"} 1`,
		`controller_reconcile_duration_seconds_count{controller="newresource"} 1`,
		`controller_leader{controller="newresource"} 1`,
		`controller_active_windows_total{controller="newresource"} 1`,
		`controller_api_errors_total{controller="newresource",resource="newresources",verb="list",code="403"} 1`,
		"# EOF\n",
	} {
		if !strings.Contains(text, needle) {
			t.Errorf("%s missing from\n%s", needle, text)
		}
	}
}
