package leaderclient

import (
	"context"
	"time"
)

// Window is one active window: the grant that opened it.
type Window struct {
	// Term of the window; nil when unknown (leader election off).
	Term *int64
	// Grant is the grant that opened the window (later grants renew it).
	Grant Grant
}

// The log messages of a window, the same in every controller of leader-sidecar (the
// conformance suite pairs them by term).
const (
	MsgWindowStarted = "active window started"
	MsgWindowEnded   = "active window ended"
)

// RunWhileLeader opens and closes active windows as gate says, until ctx ends. In each window
// it calls work with a context that is cancelled when the grant is revoked, runs out or
// changes term (or ctx ends), and waits for work to return before it logs the end of the
// window: so every write work sends with its context lies inside the logged window.
//
// work must stop when its context is done, and must pass that context to every request it
// makes; a new window calls work again from the start (a full resync). An error from work
// ends the window early (logged with reason "work stopped"); a new one opens a second later if
// a grant is then in force.
//
// Logged: "active window started" with term before work starts, and "active window ended"
// with term and reason once work has returned. Returns when ctx ends, after closing the window
// that was open.
func RunWhileLeader(ctx context.Context, gate *Gate, log Logger, work func(ctx context.Context, w Window) error) {
	for {
		grant, ok := gate.Opened(ctx)
		if !ok {
			return
		}
		w := Window{Term: grant.Term, Grant: grant}
		logInfo(log, MsgWindowStarted, termKV(w.Term)...)
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- work(wctx, w) }()
		closed := make(chan CloseReason, 1)
		go func() { closed <- gate.Closed(wctx, w.Term) }()
		var reason string
		var workErr error
		select {
		case r := <-closed:
			reason = string(r)
			cancel()
			workErr = <-done
		case workErr = <-done:
			reason = "work stopped"
			cancel()
			<-closed
		}
		if ctx.Err() != nil {
			reason = string(Shutdown)
		}
		if workErr != nil && reason == "work stopped" {
			logWarn(log, "active window work failed", "error", workErr.Error())
		}
		// work has returned: nothing of the window can still be sent.
		logInfo(log, MsgWindowEnded, append(termKV(w.Term), "reason", reason)...)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if reason == "work stopped" {
			// Do not spin when work fails at once: retry the window after a pause.
			t := time.NewTimer(workRetry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// workRetry is the pause before a window that work ended on its own is opened again.
const workRetry = time.Second

func termKV(term *int64) []interface{} {
	if term == nil {
		return nil
	}
	return []interface{}{"term", *term}
}

func logInfo(l Logger, msg string, kv ...interface{}) {
	if l != nil {
		l.Info(msg, kv...)
	}
}

func logWarn(l Logger, msg string, kv ...interface{}) {
	if l != nil {
		l.Warn(msg, kv...)
	}
}
