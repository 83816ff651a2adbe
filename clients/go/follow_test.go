package leaderclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The follower and the client against a fake sidecar on httptest. Conditions are awaited on
// the gate's change notifications with a deadline; nothing sleeps to synchronise.

// fakeSidecar answers GET /leader with its current status (or an error code) and holds
// /leader/watch streams that tests push events into.
type fakeSidecar struct {
	mu       sync.Mutex
	status   LeaderStatus
	code     int // non-200: GET /leader answers this
	gets     int
	streams  []chan string // one per open watch; a closed channel ends that stream
	watches  chan struct{} // a value per stream opened
	yields   int
	getDelay chan struct{} // when set, GET /leader waits for it
}

func newFakeSidecar() *fakeSidecar {
	return &fakeSidecar{status: follower(1), code: http.StatusOK, watches: make(chan struct{}, 16)}
}

func (f *fakeSidecar) set(status LeaderStatus) {
	f.mu.Lock()
	f.status = status
	f.mu.Unlock()
}

// push sends an event to every open stream.
func (f *fakeSidecar) push(status LeaderStatus) {
	body, _ := json.Marshal(status)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.streams {
		s <- "event: leader\ndata: " + string(body) + "\n\n"
	}
}

// closeStreams ends every open stream.
func (f *fakeSidecar) closeStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.streams {
		close(s)
	}
	f.streams = nil
}

func (f *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == PathLeader:
		f.mu.Lock()
		f.gets++
		status, code, delay := f.status, f.code, f.getDelay
		f.mu.Unlock()
		if delay != nil {
			select {
			case <-delay:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if code != http.StatusOK {
			fmt.Fprint(w, `{"error":"boom"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(status)
	case r.Method == http.MethodGet && r.URL.Path == PathWatch:
		events := make(chan string, 16)
		f.mu.Lock()
		f.streams = append(f.streams, events)
		status := f.status
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		body, _ := json.Marshal(status)
		// A comment and an event of another type, which a client must skip.
		fmt.Fprintf(w, ": hello\n\nevent: other\ndata: {}\n\nevent: leader\ndata: %s\n\n", body)
		w.(http.Flusher).Flush()
		f.watches <- struct{}{}
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				fmt.Fprint(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	case r.Method == http.MethodPost && r.URL.Path == PathYield:
		f.mu.Lock()
		f.yields++
		f.mu.Unlock()
		fmt.Fprint(w, `{"was_leader":true,"backoff_ms":15000}`)
	default:
		http.NotFound(w, r)
	}
}

// start runs a follower against a fake sidecar; stopped at the end of the test.
func start(t *testing.T, pollInterval time.Duration) (*fakeSidecar, *Gate, *Client) {
	t.Helper()
	fake := newFakeSidecar()
	srv := httptest.NewServer(fake)
	client, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	gate := NewGate()
	f := &Follower{Source: client, PollInterval: pollInterval, Gate: gate}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		fake.closeStreams()
		srv.Close()
	})
	return fake, gate, client
}

// waitFor waits until cond holds on the gate, waking on every change (and every 10 ms, for
// conditions on the clock), failing after 10 s.
func waitFor(t *testing.T, gate *Gate, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		_, changed := gate.snapshot()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func granted(gate *Gate, t int64) func() bool {
	return func() bool {
		g, ok := gate.Current()
		return ok && g.Term != nil && *g.Term == t
	}
}

func closed(gate *Gate) func() bool {
	return func() bool { _, ok := gate.Current(); return !ok }
}

func TestTheFollowerGrantsOnlyFromGetAndRevokesOnTheStream(t *testing.T) {
	fake, gate, _ := start(t, 200*time.Millisecond)
	<-fake.watches
	waitFor(t, gate, "the sidecar to be reachable", gate.Reachable)
	if _, ok := gate.Current(); ok {
		t.Fatal("a follower's gate is closed")
	}
	// Promotion: the stream says leader, the GET it triggers grants.
	fake.set(leader(5, 2000))
	fake.push(leader(5, 2000))
	waitFor(t, gate, "a grant in term 5", granted(gate, 5))
	// Loss on the stream closes the gate at once, while GET would still grant.
	fake.push(follower(6))
	waitFor(t, gate, "the revocation", closed(gate))
}

func TestAGrantIsRenewedAndRunsOutWhenTheSidecarStopsAnswering(t *testing.T) {
	fake, gate, _ := start(t, 100*time.Millisecond)
	<-fake.watches
	fake.set(leader(2, 400))
	fake.push(leader(2, 400))
	waitFor(t, gate, "a grant", granted(gate, 2))
	first, _ := gate.Current()
	// Renewed half-way through each grant: a later grant replaces the first.
	waitFor(t, gate, "a renewal", func() bool {
		g, ok := gate.Current()
		return ok && g.SentAt.After(first.SentAt)
	})
	// The sidecar hangs (SIGSTOP): GETs time out, the stream is silent; the grant ends no
	// later than its own end, counted from before its request.
	fake.mu.Lock()
	fake.getDelay = make(chan struct{})
	fake.mu.Unlock()
	last, _ := gate.Current()
	waitFor(t, gate, "the grant to run out", closed(gate))
	if now := time.Now(); now.Before(last.Until) && gate.Reachable() {
		t.Fatalf("closed before the grant's end without a failure")
	}
	close(fake.getDelay)
}

func TestUnreachableOrNon200MeansNotLeader(t *testing.T) {
	fake, gate, _ := start(t, 100*time.Millisecond)
	<-fake.watches
	fake.set(leader(3, 2000))
	fake.push(leader(3, 2000))
	waitFor(t, gate, "a grant", granted(gate, 3))
	fake.mu.Lock()
	fake.code = http.StatusInternalServerError
	fake.mu.Unlock()
	// The next renewal (half-way, 1 s) fails: not leader, and not reachable.
	waitFor(t, gate, "a failed renewal to revoke", func() bool {
		_, ok := gate.Current()
		return !ok && !gate.Reachable()
	})
}

func TestTheStreamIsReopenedAfterItCloses(t *testing.T) {
	fake, gate, _ := start(t, 100*time.Millisecond)
	<-fake.watches
	fake.set(leader(4, 5000))
	fake.push(leader(4, 5000))
	waitFor(t, gate, "a grant", granted(gate, 4))
	fake.closeStreams()
	// A closed stream revokes at once, although the grant had seconds left.
	waitFor(t, gate, "the revocation", closed(gate))
	select {
	case <-fake.watches:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream was not reopened")
	}
	// The reopened stream's first event (leader) asks for a grant again.
	waitFor(t, gate, "a grant after the reconnect", granted(gate, 4))
}

func TestYieldAndStrictAnswers(t *testing.T) {
	fake := newFakeSidecar()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, err := NewClient(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	y, err := c.Yield(context.Background())
	if err != nil || !y.WasLeader || y.BackoffMs != 15000 || fake.yields != 1 {
		t.Fatalf("yield: %+v %v", y, err)
	}
	for _, bad := range []string{"http://x:4040/leader", "https://x:4040", "x:4040", "http://u@x:1"} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := ParseStatus([]byte(`{"is_leader":true}`)); err == nil {
		t.Error("an answer without valid_for_ms parsed")
	}
	if _, err := ParseStatus([]byte(`{"is_leader":"yes","valid_for_ms":1}`)); err == nil {
		t.Error("a mistyped answer parsed")
	}
	s, err := ParseStatus([]byte(`{"is_leader":true,"term":null,"valid_for_ms":7,"holder":null,"future":1}`))
	if err != nil || !s.IsLeader || s.Term != nil || s.ValidForMs != 7 {
		t.Fatalf("%+v %v", s, err)
	}
}

func TestSSEParsing(t *testing.T) {
	r := NewSSEReader(strings.NewReader(": comment\r\nevent: leader\r\ndata: a\r\ndata:b\r\n\r\nid: 1\n\ndata: c\n\nevent: x\n"))
	want := []SSEEvent{{Type: "leader", Data: "a\nb"}, {Type: "message", Data: "c"}}
	for _, w := range want {
		ev, err := r.Next()
		if err != nil || ev != w {
			t.Fatalf("got %+v %v, want %+v", ev, err, w)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}
