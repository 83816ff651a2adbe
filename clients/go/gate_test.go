package leaderclient

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The gate's state machine driven through made-up time: every input carries its instant, so
// nothing here sleeps.

const poll = time.Second

// clock is a fake monotonic clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func term(t int64) *int64 { return &t }

func leader(t int64, validMs uint64) LeaderStatus {
	holder := "pod-a"
	return LeaderStatus{IsLeader: true, Identity: "pod-a", Holder: &holder, Lease: "ns/lease", Term: term(t), ValidForMs: validMs}
}

func follower(t int64) LeaderStatus {
	holder := "pod-b"
	return LeaderStatus{Identity: "pod-a", Holder: &holder, Lease: "ns/lease", Term: term(t)}
}

// pollAt sends a GET at now and applies answer to it.
func pollAt(s *GateState, now time.Time, answer LeaderStatus) {
	s.OnAnswer(s.PollSent(now), answer)
}

func mustGrant(t *testing.T, s *GateState, now time.Time) Grant {
	t.Helper()
	g, ok := s.Grant(now)
	if !ok {
		t.Fatalf("no grant at %v", now)
	}
	return g
}

func mustNoGrant(t *testing.T, s *GateState, now time.Time, why string) {
	t.Helper()
	if g, ok := s.Grant(now); ok {
		t.Fatalf("%s: unexpected grant %+v", why, g)
	}
}

func dueAt(t *testing.T, s *GateState, now, want time.Time, why string) {
	t.Helper()
	due, ok := s.PollDue(now)
	if !ok || !due.Equal(want) {
		t.Fatalf("%s: poll due %v (%v), want %v", why, due, ok, want)
	}
}

func notDue(t *testing.T, s *GateState, now time.Time, why string) {
	t.Helper()
	if due, ok := s.PollDue(now); ok {
		t.Fatalf("%s: poll due at %v, want none", why, due)
	}
}

func TestAGrantCountsFromBeforeTheRequestAndExpiresOnTheMonotonicClock(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	sent := c.now()
	ticket := s.PollSent(sent)
	// The answer takes 300 ms to arrive; the grant still ends 2 s after the send.
	c.advance(300 * time.Millisecond)
	s.OnAnswer(ticket, leader(4, 2000))
	g := mustGrant(t, s, c.now())
	if !g.Until.Equal(sent.Add(2 * time.Second)) {
		t.Fatalf("until %v, want sent + 2 s", g.Until)
	}
	if g.Term == nil || *g.Term != 4 {
		t.Fatalf("term %v", g.Term)
	}
	c.advance(1699 * time.Millisecond)
	mustGrant(t, s, c.now())
	c.advance(time.Millisecond)
	mustNoGrant(t, s, c.now(), "expired exactly at sent + valid_for")
}

func TestAStreamEventNeverGrantsItAsksForAGet(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	s.OnStreamEvent(leader(1, 2000))
	mustNoGrant(t, s, c.now(), "a stream event")
	dueAt(t, s, c.now(), c.now(), "confirm at once")
	pollAt(s, c.now(), leader(1, 2000))
	mustGrant(t, s, c.now())
}

func TestRevocationsAreImmediateAndDiscardAnswersSentBeforeThem(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	pollAt(s, c.now(), leader(1, 2000))
	// A renewal is in flight when the stream says we lost leadership.
	ticket := s.PollSent(c.now())
	s.OnStreamEvent(follower(2))
	mustNoGrant(t, s, c.now(), "revoked by the stream")
	// The sidecar may have produced this answer before it lost: it must not re-grant.
	s.OnAnswer(ticket, leader(1, 2000))
	mustNoGrant(t, s, c.now(), "an answer from before the revocation")

	// Stream loss revokes too.
	pollAt(s, c.now(), leader(3, 2000))
	mustGrant(t, s, c.now())
	s.OnStreamLost()
	mustNoGrant(t, s, c.now(), "stream lost")
}

func TestANewTermOnTheStreamRevokesAndAsksAgain(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	s.OnStreamEvent(leader(1, 2000))
	pollAt(s, c.now(), leader(1, 2000))
	s.OnStreamEvent(leader(2, 2000))
	mustNoGrant(t, s, c.now(), "term 1's grant is no evidence for term 2")
	dueAt(t, s, c.now(), c.now(), "ask at once")
	pollAt(s, c.now(), leader(2, 2000))
	if g := mustGrant(t, s, c.now()); *g.Term != 2 {
		t.Fatalf("term %d", *g.Term)
	}
}

func TestTheLastAnswerWins(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	pollAt(s, c.now(), leader(1, 2000))
	// The sidecar is near the end of its tenure: a shorter grant replaces the longer one.
	c.advance(500 * time.Millisecond)
	sent := c.now()
	pollAt(s, sent, leader(1, 100))
	if g := mustGrant(t, s, c.now()); !g.Until.Equal(sent.Add(100 * time.Millisecond)) {
		t.Fatalf("until %v", g.Until)
	}
	pollAt(s, c.now(), follower(1))
	mustNoGrant(t, s, c.now(), "a follower answer")
	// A zero-length grant is no grant.
	pollAt(s, c.now(), leader(1, 0))
	mustNoGrant(t, s, c.now(), "valid_for_ms 0")
}

func TestUnreachableMeansNotLeader(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	pollAt(s, c.now(), leader(1, 2000))
	if !s.Reachable() {
		t.Fatal("reachable after an answer")
	}
	s.OnPollFailed(s.PollSent(c.now()))
	mustNoGrant(t, s, c.now(), "a failed request")
	if s.Reachable() {
		t.Fatal("unreachable after a failure")
	}
}

func TestPollingSchedule(t *testing.T) {
	t0 := newClock().now()
	s := NewGateState(poll)
	// No stream yet: poll at once, then every poll interval.
	dueAt(t, s, t0, t0, "first poll")
	ticket := s.PollSent(t0)
	notDue(t, s, t0, "one request at a time")
	s.OnAnswer(ticket, follower(1))
	dueAt(t, s, t0, t0.Add(poll), "every poll interval")

	// While a grant runs, renew half-way through it even if that is sooner.
	pollAt(s, t0, leader(1, 800))
	dueAt(t, s, t0, t0.Add(400*time.Millisecond), "half-way renewal")

	// A healthy stream covers a standby: no polling.
	s.OnStreamEvent(follower(1))
	mustNoGrant(t, s, t0, "follower event")
	notDue(t, s, t0, "a healthy stream covers a standby")

	// Stream lost: back to polling every interval after the last request.
	s.OnStreamLost()
	dueAt(t, s, t0, t0.Add(poll), "stream lost")
}

// Hole 1 of issue #15: the controller is frozen past its grant while the sidecar keeps the
// Lease. Nothing changes at the sidecar, so the healthy stream has nothing to say; the gate
// must ask by itself, or the leader sits idle for good.
func TestAGrantThatRanOutWhileFrozenIsAskedForAgain(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	s.OnStreamEvent(leader(3, 2000))
	pollAt(s, c.now(), leader(3, 2000))
	mustGrant(t, s, c.now())
	// Frozen for 3 s: the renewal half-way through the grant never went out.
	c.advance(3 * time.Second)
	now := c.now()
	mustNoGrant(t, s, now, "the grant ran out")
	dueAt(t, s, now, now, "ask at once after a thaw")
	// Events queued during the freeze (same term, still leader) must not cancel the ask.
	s.OnStreamEvent(leader(3, 2000))
	dueAt(t, s, now, now, "still asking")
	pollAt(s, now, leader(3, 2000))
	mustGrant(t, s, now)
}

// The same freeze while a GET is in flight: its answer arrives after the thaw with a grant
// that has already run out. The gate asks again.
func TestAnAnswerThatArrivesExpiredAfterAFreezeIsAskedForAgain(t *testing.T) {
	c := newClock()
	s := NewGateState(poll)
	s.OnStreamEvent(leader(3, 2000))
	pollAt(s, c.now(), leader(3, 2000))
	c.advance(time.Second)
	ticket := s.PollSent(c.now())
	c.advance(2500 * time.Millisecond)
	s.OnAnswer(ticket, leader(3, 2000))
	now := c.now()
	mustNoGrant(t, s, now, "the answer's grant is already over")
	dueAt(t, s, now, now, "ask again")
	// If the sidecar now says we lost the Lease meanwhile, the gate stays closed and quiet.
	pollAt(s, now, follower(4))
	mustNoGrant(t, s, now, "lost meanwhile")
	notDue(t, s, now, "a healthy stream covers a standby")
}

func TestTheGateHandleSeesGrantsAndTheirEnd(t *testing.T) {
	c := newClock()
	gate := newGateWithClock(c.now)
	if _, ok := gate.Current(); ok {
		t.Fatal("a new gate is closed")
	}
	s := NewGateState(poll)
	pollAt(s, c.now(), leader(7, 2000))
	gate.Publish(s.View())
	ctx := context.Background()
	g, ok := gate.Opened(ctx)
	if !ok || *g.Term != 7 || !gate.Reachable() {
		t.Fatalf("opened %+v %v", g, ok)
	}
	// Nobody renews: on the gate's clock the grant has run out.
	c.advance(2 * time.Second)
	if _, ok := gate.Current(); ok {
		t.Fatal("the grant ran out")
	}
	if r := gate.Closed(ctx, term(7)); r != Expired {
		t.Fatalf("closed: %s", r)
	}

	// A revocation closes it at once, waking a waiter.
	pollAt(s, c.now(), leader(7, 2000))
	gate.Publish(s.View())
	if _, ok := gate.Opened(ctx); !ok {
		t.Fatal("not reopened")
	}
	closed := make(chan CloseReason)
	go func() { closed <- gate.Closed(ctx, term(7)) }()
	s.OnStreamEvent(follower(8))
	gate.Publish(s.View())
	if r := <-closed; r != Revoked {
		t.Fatalf("closed: %s", r)
	}

	// A grant in another term closes the window of the old term.
	pollAt(s, c.now(), leader(9, 2000))
	gate.Publish(s.View())
	if r := gate.Closed(ctx, term(7)); r != NewTerm {
		t.Fatalf("closed: %s", r)
	}
	// And a cancelled context ends the wait.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if r := gate.Closed(cancelled, term(9)); r != Shutdown {
		t.Fatalf("closed: %s", r)
	}
	gate.Publish(View{})
	if _, ok := gate.Opened(cancelled); ok {
		t.Fatal("opened a closed gate")
	}
}

func TestAlwaysOpenNeverCloses(t *testing.T) {
	gate := AlwaysOpenGate()
	g, ok := gate.Current()
	if !ok || g.Term != nil {
		t.Fatalf("%+v %v", g, ok)
	}
	if !g.ValidAt(time.Now().Add(365 * 24 * time.Hour)) {
		t.Fatal("an always-open gate closes within a year")
	}
}
