package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sync"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// Active windows. leaderclient.RunWhileLeader calls runWindow when a grant opens a window and
// cancels its context when the grant ends; runWindow returns only when every worker and the
// watch have stopped, so the logged window contains every write this process sent in it.
//
// Each window starts from nothing: it lists every NewResource (the full resync after a pause),
// queues them all, then watches from the list's resourceVersion (with bookmarks; a 410 Gone
// relists). Workers take keys from a queue that never hands one key to two workers at once.

const (
	listPage            = 500
	watchTimeoutSeconds = 290
	watchBackoffBase    = 500 * time.Millisecond
	watchBackoffMax     = 30 * time.Second
)

type workers struct {
	kube        *kubeClient
	namespace   string
	concurrency int
	reconciler  *reconciler
	metrics     *metrics
	log         *Logger
}

// window is the state of one active window.
type window struct {
	*workers
	mu    sync.Mutex
	cache map[string]object
	queue *workQueue
}

func (w *workers) runWindow(ctx context.Context, win leaderclient.Window) error {
	w.metrics.setLeader(true)
	w.metrics.windowStarted()
	defer w.metrics.setLeader(false)
	w.log.Info("Starting workers", "controller", "newresource", "worker_count", w.concurrency)
	state := &window{workers: w, cache: map[string]object{}, queue: newWorkQueue()}
	var wg sync.WaitGroup
	for i := 0; i < w.concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state.work(ctx)
		}()
	}
	state.watchLoop(ctx)
	state.queue.shutdown()
	wg.Wait()
	w.log.Info("Stopping workers", "controller", "newresource")
	return nil
}

func (s *window) cached(key string) object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache[key]
}

func (s *window) work(ctx context.Context) {
	for {
		key, ok := s.queue.get(ctx)
		if !ok {
			return
		}
		s.process(ctx, key)
		s.queue.done(key)
	}
}

func (s *window) process(ctx context.Context, key string) {
	obj := s.cached(key)
	if obj == nil {
		return // deleted since it was queued
	}
	started := time.Now()
	result, answer, err := s.reconciler.reconcile(ctx, obj)
	if errors.Is(err, errWindowStopped) || ctx.Err() != nil {
		return
	}
	if err != nil {
		kind := "transport"
		var re *reconcileError
		if errors.As(err, &re) {
			kind = re.kind
		}
		s.metrics.reconciled(started, "error", kind)
		delay := s.reconciler.backoff.next(key)
		s.log.Warn("reconcile failed", "object", key, "error_type", kind, "error", err.Error(), "retry_in_ms", delay.Milliseconds())
		s.queue.addAfter(key, delay)
		return
	}
	s.reconciler.backoff.reset(key)
	if result == gone {
		s.metrics.reconciled(started, "not_found", "")
	} else {
		s.metrics.reconciled(started, "success", "")
	}
	// Keep the written object, but only if the cache still holds the version the write was
	// based on: a newer one from the watch must not be hidden by our older answer. This
	// avoids a needless second write (409) if the key comes back before the watch does.
	if answer != nil && answer.key() == key {
		s.mu.Lock()
		if cur := s.cache[key]; cur != nil && cur.resourceVersion() == obj.resourceVersion() {
			s.cache[key] = answer
		}
		s.mu.Unlock()
	}
}

// watchLoop lists, then watches from the list's resourceVersion; relists on 410; retries
// other failures with backoff, until ctx ends.
func (s *window) watchLoop(ctx context.Context) {
	delay := watchBackoffBase
	rv := ""
	var listedAt time.Time
	for ctx.Err() == nil {
		verb := "list"
		var err error
		if rv == "" {
			rv, err = s.list(ctx)
			listedAt = time.Now()
		}
		if err == nil {
			verb = "watch"
			started := time.Now()
			rv, err = s.watch(ctx, rv)
			if err == nil && time.Since(started) >= time.Second {
				delay = watchBackoffBase
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			code := errorCode(err)
			s.metrics.apiError(resource, verb, code)
			s.log.Warn("watching newresources failed", "resource", resource, "verb", verb, "code", code, "error", err.Error())
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == 410 {
				// The history no longer holds our resourceVersion: list again (and so
				// reconcile everything again), at once unless we just listed.
				rv = ""
				if verb == "watch" && time.Since(listedAt) >= time.Second {
					continue
				}
			}
		}
		// A failure, or a watch the server ended at once: not in a hot loop.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		if delay *= 2; delay > watchBackoffMax {
			delay = watchBackoffMax
		}
	}
}

// list lists every NewResource (in pages), replaces the cache and queues every key; returns
// the list's resourceVersion.
func (s *window) list(ctx context.Context) (string, error) {
	items := map[string]object{}
	cont, rv := "", ""
	for {
		query := url.Values{"limit": {itoa(listPage)}}
		if cont != "" {
			query.Set("continue", cont)
		}
		page, err := s.kube.list(ctx, s.namespace, query)
		if err != nil {
			return "", err
		}
		for _, obj := range page.Items {
			if key := obj.key(); key != "" {
				items[key] = obj
			} else {
				s.log.Warn("ignoring a newresource without namespace or name")
			}
		}
		rv, cont = page.Metadata.ResourceVersion, page.Metadata.Continue
		if cont == "" {
			break
		}
	}
	if rv == "" {
		return "", errors.New("the list answer has no resourceVersion")
	}
	keys := make([]string, 0, len(items))
	for key := range items {
		keys = append(keys, key)
	}
	// From here on workers own the map (under s.mu): queue from the copy of its keys.
	s.mu.Lock()
	s.cache = items
	s.mu.Unlock()
	for _, key := range keys {
		s.queue.add(key)
	}
	return rv, nil
}

// watch runs one watch from rv until the server ends it; returns the last resourceVersion.
func (s *window) watch(ctx context.Context, rv string) (string, error) {
	err := s.kube.watch(ctx, s.namespace, rv, watchTimeoutSeconds, func(ev watchEvent) error {
		if ev.Type == "ERROR" {
			var status struct {
				Code    int    `json:"code"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Object, &status)
			if status.Code == 0 {
				status.Code = 500
			}
			return &apiError{Code: status.Code, Reason: status.Reason, Message: status.Message}
		}
		var obj object
		if err := decodeJSON(ev.Object, &obj); err != nil || obj == nil {
			s.log.Warn("ignoring a malformed watch event", "reason", "the object does not parse")
			return nil
		}
		if next := obj.resourceVersion(); next != "" {
			rv = next
		}
		if ev.Type == "BOOKMARK" {
			return nil
		}
		key := obj.key()
		if key == "" {
			s.log.Warn("ignoring a newresource without namespace or name", "event", ev.Type)
			return nil
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			s.mu.Lock()
			s.cache[key] = obj
			s.mu.Unlock()
			s.queue.add(key)
		case "DELETED":
			s.mu.Lock()
			delete(s.cache, key)
			s.mu.Unlock()
		default:
			s.log.Warn("ignoring a malformed watch event", "reason", "unknown type "+ev.Type)
		}
		return nil
	})
	return rv, err
}

// workQueue hands out keys, each to one worker at a time: a key added while it is being
// processed is handed out again once it is done.
type workQueue struct {
	mu         sync.Mutex
	items      []string
	queued     map[string]bool
	processing map[string]bool
	dirty      map[string]bool
	timers     map[*time.Timer]bool
	closed     bool
	notify     chan struct{}
}

func newWorkQueue() *workQueue {
	return &workQueue{
		queued: map[string]bool{}, processing: map[string]bool{}, dirty: map[string]bool{},
		timers: map[*time.Timer]bool{}, notify: make(chan struct{}, 1),
	}
}

func (q *workQueue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *workQueue) add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.queued[key] {
		return
	}
	if q.processing[key] {
		q.dirty[key] = true
		return
	}
	q.queued[key] = true
	q.items = append(q.items, key)
	q.signal()
}

func (q *workQueue) addAfter(key string, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		q.mu.Lock()
		delete(q.timers, t)
		q.mu.Unlock()
		q.add(key)
	})
	q.timers[t] = true
}

// get waits for a key; false when the queue is shut down or ctx ends.
func (q *workQueue) get(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if q.closed || ctx.Err() != nil {
			q.mu.Unlock()
			return "", false
		}
		if len(q.items) > 0 {
			key := q.items[0]
			q.items = q.items[1:]
			delete(q.queued, key)
			q.processing[key] = true
			if len(q.items) > 0 {
				q.signal()
			}
			q.mu.Unlock()
			return key, true
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
		}
	}
}

func (q *workQueue) done(key string) {
	q.mu.Lock()
	delete(q.processing, key)
	again := q.dirty[key]
	delete(q.dirty, key)
	q.mu.Unlock()
	if again {
		q.add(key)
	}
}

func (q *workQueue) shutdown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	for t := range q.timers {
		t.Stop()
	}
	q.timers = map[*time.Timer]bool{}
	close(q.notify)
}

func (q *workQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
