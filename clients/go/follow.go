package leaderclient

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"
)

// Source is where leadership comes from: the sidecar over HTTP ([Client]) or, in tests, a fake.
type Source interface {
	Get(ctx context.Context) (LeaderStatus, error)
	Watch(ctx context.Context) (*EventStream, error)
}

// Logger receives the follower's and RunWhileLeader's log lines: a message and key/value pairs
// (keys are strings). A nil Logger logs nothing.
type Logger interface {
	Info(msg string, kv ...interface{})
	Warn(msg string, kv ...interface{})
}

// maxIdle: the follower loop wakes at least this often, so that its heartbeat shows it is alive.
const maxIdle = time.Second

// Follower keeps a [Gate] in step with the sidecar: holds /leader/watch open for prompt
// revocations and promotions, sends GET /leader for grants (see [GateState]), and polls every
// PollInterval while the stream is unavailable. Each GET times out after PollInterval.
type Follower struct {
	Source       Source
	PollInterval time.Duration
	Gate         *Gate
	Log          Logger

	heartbeat atomic.Int64 // unix nanoseconds of the last loop turn
}

// Heartbeat returns when the follower loop last ran (zero before it started); a liveness
// probe fails when it stops turning.
func (f *Follower) Heartbeat() time.Time {
	n := f.heartbeat.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

type streamNews struct {
	event LeaderStatus
	lost  error
}

type answer struct {
	ticket Ticket
	status LeaderStatus
	err    error
}

// Run follows the sidecar until ctx ends, publishing every change of the gate's view. When it
// returns, the gate is closed (a follower that stopped cannot renew).
func (f *Follower) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer f.Gate.Publish(View{})
	state := NewGateState(f.PollInterval)
	news := make(chan streamNews, 16)
	go f.holdStream(ctx, news)
	answers := make(chan answer, 1)
	wasReachable := true
	for {
		now := time.Now()
		f.heartbeat.Store(now.UnixNano())
		f.Gate.Publish(state.View())
		if state.Reachable() != wasReachable {
			wasReachable = state.Reachable()
			if wasReachable {
				f.info("sidecar reachable")
			}
		}
		wake := now.Add(maxIdle)
		due, pollDue := state.PollDue(now)
		if pollDue && due.Before(wake) {
			wake = due
		}
		if g, ok := state.Grant(now); ok && g.Until.Before(wake) {
			wake = g.Until
		}
		timer := time.NewTimer(time.Until(wake))
		// Stream news first, as the Rust follower's biased select: a revocation that is
		// already here must not lose to a timer.
		select {
		case n := <-news:
			timer.Stop()
			f.onNews(state, n)
			continue
		default:
		}
		select {
		case n := <-news:
			f.onNews(state, n)
		case a := <-answers:
			if a.err != nil {
				if state.Reachable() {
					f.warn("leadership request failed: not leader", "error", a.err.Error())
				}
				wasReachable = false
				state.OnPollFailed(a.ticket)
			} else {
				state.OnAnswer(a.ticket, a.status)
			}
		case <-timer.C:
			if due, ok := state.PollDue(time.Now()); ok && !time.Now().Before(due) {
				// The send instant is read before the request exists, so it precedes the send.
				ticket := state.PollSent(time.Now())
				go f.ask(ctx, ticket, answers)
			}
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

func (f *Follower) onNews(state *GateState, n streamNews) {
	if n.lost == nil {
		state.OnStreamEvent(n.event)
		return
	}
	if state.StreamUp() {
		f.warn("leader stream lost; polling until it is back", "reason", n.lost.Error())
	}
	state.OnStreamLost()
}

func (f *Follower) ask(ctx context.Context, ticket Ticket, answers chan<- answer) {
	ctx, cancel := context.WithTimeout(ctx, f.PollInterval)
	defer cancel()
	status, err := f.Source.Get(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = errors.New("the sidecar did not answer within " + f.PollInterval.String())
	}
	// Buffered for the one request in flight: never blocks.
	answers <- answer{ticket: ticket, status: status, err: err}
}

// holdStream holds /leader/watch open, reconnecting every poll interval after a failure.
func (f *Follower) holdStream(ctx context.Context, news chan<- streamNews) {
	for {
		var why error
		stream, err := f.Source.Watch(ctx)
		if err != nil {
			why = err
		} else {
			for {
				status, err := stream.Next()
				if err != nil {
					why = err
					if errors.Is(err, io.EOF) {
						why = errors.New("the sidecar closed the stream")
					}
					break
				}
				select {
				case news <- streamNews{event: status}:
				case <-ctx.Done():
					stream.Close()
					return
				}
			}
			stream.Close()
		}
		select {
		case news <- streamNews{lost: why}:
		case <-ctx.Done():
			return
		}
		retry := time.NewTimer(f.PollInterval)
		select {
		case <-retry.C:
		case <-ctx.Done():
			retry.Stop()
			return
		}
	}
}

func (f *Follower) info(msg string, kv ...interface{}) {
	if f.Log != nil {
		f.Log.Info(msg, kv...)
	}
}

func (f *Follower) warn(msg string, kv ...interface{}) {
	if f.Log != nil {
		f.Log.Warn(msg, kv...)
	}
}
