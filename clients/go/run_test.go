package leaderclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// recorder is a Logger that keeps its lines and announces each one.
type recorder struct {
	mu    sync.Mutex
	lines []string
	added chan string
}

func newRecorder() *recorder { return &recorder{added: make(chan string, 64)} }

func (r *recorder) Info(msg string, kv ...interface{}) { r.add(msg, kv) }
func (r *recorder) Warn(msg string, kv ...interface{}) { r.add(msg, kv) }

func (r *recorder) add(msg string, kv []interface{}) {
	line := fmt.Sprint(append([]interface{}{msg}, kv...)...)
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	r.added <- line
}

// next returns the next logged line.
func (r *recorder) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-r.added:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no log line")
		return ""
	}
}

func grantView(s *GateState, now time.Time, t int64) View {
	pollAt(s, now, leader(t, 60_000))
	return s.View()
}

func TestRunWhileLeaderCancelsWorkWhenTheGrantEndsAndLogsTheWindow(t *testing.T) {
	gate := NewGate()
	log := newRecorder()
	s := NewGateState(poll)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan Window)
	stopped := make(chan error)
	done := make(chan struct{})
	go func() {
		RunWhileLeader(ctx, gate, log, func(wctx context.Context, w Window) error {
			started <- w
			<-wctx.Done()
			// The window's end is logged only after this returns.
			stopped <- wctx.Err()
			return nil
		})
		close(done)
	}()

	gate.Publish(grantView(s, time.Now(), 3))
	if l := log.next(t); l != fmt.Sprint(MsgWindowStarted, "term", int64(3)) {
		t.Fatalf("first line %q", l)
	}
	if w := <-started; *w.Term != 3 {
		t.Fatalf("window term %d", *w.Term)
	}
	// Revoked: work's context is cancelled, and the end is logged after work returned.
	s.OnStreamEvent(follower(4))
	gate.Publish(s.View())
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("work stopped with %v", err)
	}
	if l := log.next(t); l != fmt.Sprint(MsgWindowEnded, "term", int64(3), "reason", "revoked") {
		t.Fatalf("end line %q", l)
	}

	// A new term opens a new window, with a fresh call of work (the full resync).
	gate.Publish(grantView(s, time.Now(), 5))
	log.next(t)
	if w := <-started; *w.Term != 5 {
		t.Fatalf("window term %d", *w.Term)
	}
	// Shutdown closes the open window before RunWhileLeader returns.
	cancel()
	<-stopped
	if l := log.next(t); l != fmt.Sprint(MsgWindowEnded, "term", int64(5), "reason", "shutdown") {
		t.Fatalf("end line %q", l)
	}
	<-done
}

func TestRunWhileLeaderClosesTheWindowWhenTheGrantRunsOut(t *testing.T) {
	gate := NewGate()
	s := NewGateState(poll)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A grant of 50 ms that nobody renews.
	pollAt(s, time.Now(), leader(8, 50))
	gate.Publish(s.View())
	log := newRecorder()
	ended := make(chan time.Time, 1)
	go RunWhileLeader(ctx, gate, log, func(wctx context.Context, w Window) error {
		<-wctx.Done()
		ended <- time.Now()
		return nil
	})
	log.next(t)
	at := <-ended
	g := s.View().Grant
	if at.Before(g.Until) {
		t.Fatalf("work cancelled %v before the grant's end", g.Until.Sub(at))
	}
	if l := log.next(t); l != fmt.Sprint(MsgWindowEnded, "term", int64(8), "reason", "expired") {
		t.Fatalf("end line %q", l)
	}
}
