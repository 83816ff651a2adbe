package leaderclient

import (
	"context"
	"sync"
	"time"
)

// CloseReason says why an active window ended.
type CloseReason string

const (
	// Revoked: the sidecar said we are not leader, the stream closed, or it became unreachable.
	Revoked CloseReason = "revoked"
	// Expired: the grant ran out without a fresh one.
	Expired CloseReason = "expired"
	// NewTerm: the sidecar leads in a different term than the window's.
	NewTerm CloseReason = "new term"
	// Shutdown: the caller's context ended.
	Shutdown CloseReason = "shutdown"
)

// Gate is the read side of the gate: cheap to share, safe for concurrent use. The [Follower]
// publishes to it; workers ask [Gate.Current] just before every write.
type Gate struct {
	mu      sync.Mutex
	view    View
	changed chan struct{} // closed and replaced on every change
	now     func() time.Time
}

// NewGate returns a closed gate. Its clock is time.Now.
func NewGate() *Gate { return newGateWithClock(time.Now) }

func newGateWithClock(now func() time.Time) *Gate {
	return &Gate{changed: make(chan struct{}), now: now}
}

// forever is how long an always-open gate grants.
const forever = 100 * 365 * 24 * time.Hour

// AlwaysOpenGate returns a gate that is always open, for --leader-elect=false (one replica,
// development).
func AlwaysOpenGate() *Gate {
	g := NewGate()
	now := time.Now()
	g.Publish(View{Grant: &Grant{SentAt: now, Until: now.Add(forever)}, Reachable: true})
	return g
}

// Publish replaces the view; waiters wake when it changed.
func (g *Gate) Publish(v View) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.view.equal(v) {
		return
	}
	g.view = v
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *Gate) snapshot() (View, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.view, g.changed
}

// Current returns the grant in force now, checked against the monotonic clock at the moment
// of asking.
func (g *Gate) Current() (Grant, bool) {
	v, _ := g.snapshot()
	if v.Grant != nil && v.Grant.ValidAt(g.now()) {
		return *v.Grant, true
	}
	return Grant{}, false
}

// Reachable reports whether the sidecar answered the follower's last request or event.
func (g *Gate) Reachable() bool {
	v, _ := g.snapshot()
	return v.Reachable
}

// Opened waits until a grant is in force and returns it; ok is false when ctx ends first.
func (g *Gate) Opened(ctx context.Context) (grant Grant, ok bool) {
	for {
		v, changed := g.snapshot()
		if v.Grant != nil && v.Grant.ValidAt(g.now()) {
			return *v.Grant, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Grant{}, false
		}
	}
}

// Closed waits until the window of term ends: the grant is revoked, runs out, or belongs to
// another term; or ctx ends (Shutdown).
func (g *Gate) Closed(ctx context.Context, term *int64) CloseReason {
	for {
		v, changed := g.snapshot()
		if v.Grant == nil {
			return Revoked
		}
		if !sameTerm(v.Grant.Term, term) {
			return NewTerm
		}
		left := v.Grant.Until.Sub(g.now())
		if left <= 0 {
			return Expired
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
			timer.Stop()
		case <-timer.C:
			return Expired
		case <-ctx.Done():
			timer.Stop()
			return Shutdown
		}
	}
}
