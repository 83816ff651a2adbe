package leaderclient

import "time"

// Grant is leadership granted by the sidecar: act until Until (exclusive) in tenure Term.
//
// SentAt and Until come from time.Now() and its Add, so they carry Go's monotonic clock
// reading: comparisons with another time.Now() use the monotonic clock, and wall-clock steps
// cannot stretch a grant. Do not strip it (Round(0), serialisation) before comparing.
type Grant struct {
	// Term is the sidecar's term; nil when unknown (or leader election is off).
	Term *int64
	// SentAt is when the GET /leader that produced the grant was sent.
	SentAt time.Time
	Until  time.Time
}

// ValidAt reports whether the grant is in force at now.
func (g Grant) ValidAt(now time.Time) bool { return now.Before(g.Until) }

// Ticket identifies one GET /leader: when it was sent and in which epoch.
type Ticket struct {
	epoch  uint64
	sentAt time.Time
}

// GateState is the pure state machine that decides whether this controller may act. It does
// no I/O and never reads a clock: every input carries its instant, so tests drive it with
// made-up times. It is the Go port of leader-client/src/gate.rs (Rust) and
// clients/python/leader_client/gate.py (Python), rule for rule.
//
// # Safety argument
//
// The invariant is that this controller acts (starts a reconcile, sends a write) only inside
// a grant from its sidecar, and a grant never extends past the sidecar's own tenure
// (docs/leader-api.md):
//
//  1. Only a GET /leader answer grants. An answer is_leader: true, valid_for_ms: v to a request
//     whose send instant was s on our monotonic clock grants [s, s+v). The sidecar computed v
//     after s, never past its own tenure, so s+v is no later than the sidecar's deadline.
//     Counting from s (taken before the request) makes every delay shorten the grant.
//  2. Stream events never grant. A /leader/watch event is read at an unknown delay after the
//     sidecar wrote it, so is_leader: true on the stream only asks for a confirming GET.
//     Events only take leadership away: is_leader: false, a new term, or the stream closing
//     revoke at once.
//  3. The last answer wins, and late answers lose. Every revocation starts a new epoch; an
//     answer to a request sent in an earlier epoch is discarded. At most one request is in
//     flight, so answers apply in the order their requests were sent.
//  4. Unreachable means not leader. A failed or timed-out request revokes.
//  5. Work checks the gate at the last moment: [Gate.Current] compares the grant with the
//     monotonic clock each time it is asked.
//
// Liveness (rule 6 of the contract): a grant that ran out without a revocation is asked for
// again at once ([GateState.PollDue]), and stream events that say "leader, same term" never
// cancel that; otherwise a controller thawed after a freeze would wait for news that never
// comes while its sidecar keeps the Lease.
type GateState struct {
	grant    *Grant
	epoch    uint64
	streamUp bool
	// reachable: the last request or event reached the sidecar.
	reachable bool
	// confirm: a stream event said we lead; a GET must confirm it.
	confirm      bool
	inFlight     bool
	lastSent     time.Time
	hasLastSent  bool
	pollInterval time.Duration
}

// NewGateState returns a closed gate that polls every pollInterval while the stream is down.
func NewGateState(pollInterval time.Duration) *GateState {
	return &GateState{pollInterval: pollInterval}
}

// Grant returns the grant in force at now, if any.
func (s *GateState) Grant(now time.Time) (Grant, bool) {
	if s.grant != nil && s.grant.ValidAt(now) {
		return *s.grant, true
	}
	return Grant{}, false
}

// Reachable reports whether the sidecar answered the last request or sent the last event.
func (s *GateState) Reachable() bool { return s.reachable }

// StreamUp reports whether an event has been read from the currently open stream.
func (s *GateState) StreamUp() bool { return s.streamUp }

// PollDue returns when the next GET /leader is due: at once to confirm a stream event or when
// the last grant ran out without a fresh one; half-way through the current grant to renew it;
// every poll interval while the stream is down or the sidecar unreachable. ok is false while a
// request is in flight, or while a healthy stream covers a standby.
func (s *GateState) PollDue(now time.Time) (due time.Time, ok bool) {
	if s.inFlight {
		return time.Time{}, false
	}
	if s.confirm || s.grantRanOut(now) {
		return now, true
	}
	if g, granted := s.Grant(now); granted {
		due, ok = g.SentAt.Add(g.Until.Sub(g.SentAt)/2), true
	}
	if !s.streamUp || !s.reachable {
		fallback := now
		if s.hasLastSent {
			fallback = s.lastSent.Add(s.pollInterval)
		}
		if !ok || fallback.Before(due) {
			due, ok = fallback, true
		}
	}
	return due, ok
}

// PollSent records that a GET /leader is about to be sent; now must be read before sending.
func (s *GateState) PollSent(now time.Time) Ticket {
	s.inFlight = true
	s.confirm = false
	s.lastSent, s.hasLastSent = now, true
	return Ticket{epoch: s.epoch, sentAt: now}
}

// OnAnswer applies the answer to the request ticket.
func (s *GateState) OnAnswer(ticket Ticket, status LeaderStatus) {
	s.inFlight = false
	s.reachable = true
	if ticket.epoch != s.epoch {
		// Sent before a revocation: the sidecar may have answered before revoking.
		return
	}
	if status.IsLeader && status.ValidForMs > 0 {
		valid := time.Duration(status.ValidForMs) * time.Millisecond
		s.grant = &Grant{Term: status.Term, SentAt: ticket.sentAt, Until: ticket.sentAt.Add(valid)}
	} else {
		s.revoke()
	}
}

// OnPollFailed records that the request ticket failed (refused, timed out, non-200,
// unparsable): not leader.
func (s *GateState) OnPollFailed(Ticket) {
	s.inFlight = false
	s.reachable = false
	s.revoke()
}

// OnStreamEvent applies an event read from /leader/watch.
func (s *GateState) OnStreamEvent(status LeaderStatus) {
	s.streamUp = true
	s.reachable = true
	if !status.IsLeader {
		s.revoke()
		return
	}
	switch {
	case s.grant == nil:
		s.confirm = true
	case !sameTerm(s.grant.Term, status.Term):
		// A new tenure we have not confirmed: the old grant is not evidence for it.
		s.revoke()
		s.confirm = true
	default:
		// In force: renewed on the grant's own schedule. Run out: PollDue asks at once.
	}
}

// OnStreamLost records that the stream closed or failed.
func (s *GateState) OnStreamLost() {
	s.streamUp = false
	s.revoke()
}

// View is what the gate publishes to workers.
func (s *GateState) View() View {
	v := View{Reachable: s.reachable}
	if s.grant != nil {
		g := *s.grant
		v.Grant = &g
	}
	return v
}

func (s *GateState) grantRanOut(now time.Time) bool {
	return s.grant != nil && !now.Before(s.grant.Until)
}

func (s *GateState) revoke() {
	s.grant = nil
	s.epoch++
}

// View is what workers see: the latest grant (possibly expired by now) and whether the
// sidecar is reachable.
type View struct {
	Grant     *Grant
	Reachable bool
}

func (v View) equal(o View) bool {
	if v.Reachable != o.Reachable || (v.Grant == nil) != (o.Grant == nil) {
		return false
	}
	if v.Grant == nil {
		return true
	}
	a, b := v.Grant, o.Grant
	return sameTerm(a.Term, b.Term) && a.SentAt.Equal(b.SentAt) && a.Until.Equal(b.Until)
}
