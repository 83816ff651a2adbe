package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// One reconcile of a NewResource: mark it ready for its current generation, through the
// status subresource, only under a grant (controller/src/reconcile.rs).

// reconcileError is why a reconcile failed; each is retried with backoff.
type reconcileError struct {
	// kind is the error_type label of controller_reconcile_errors_total.
	kind string
	err  error
}

func (e *reconcileError) Error() string { return e.err.Error() }
func (e *reconcileError) Unwrap() error { return e.err }

var (
	errNotLeader     = &reconcileError{"not_leader", errors.New("not leader: the status write was not sent")}
	errGrantExpired  = &reconcileError{"grant_expired", errors.New("the grant ran out during the status write")}
	errUnaddressable = &reconcileError{"invalid_object", errors.New("object has no namespace or name")}
	// errWindowStopped: the window ended during the write; nothing to retry in this window.
	errWindowStopped = errors.New("the active window ended")
)

// apiFailure classifies a failed request as the Rust controller does.
func apiFailure(err error) *reconcileError {
	var ae *apiError
	if errors.As(err, &ae) {
		kind := "api"
		switch {
		case ae.Code == 403:
			kind = "forbidden"
		case ae.Code == 429:
			kind = "throttled"
		case ae.Code >= 500:
			kind = "server"
		}
		return &reconcileError{kind, fmt.Errorf("API error %d: %s", ae.Code, ae.Message)}
	}
	return &reconcileError{"transport", fmt.Errorf("request failed: %w", err)}
}

type outcome int

const (
	unchanged outcome = iota // the status was already right; nothing was sent
	updated
	gone // the object was deleted; nothing left to do
)

// statusUpToDate: status.ready is true and status.observedGeneration is the generation.
func statusUpToDate(obj object) bool {
	status, _ := obj["status"].(map[string]interface{})
	if status == nil || status["ready"] != true {
		return false
	}
	gen, hasGen := obj.generation()
	observed, hasObserved := status["observedGeneration"]
	if !hasGen {
		return !hasObserved || observed == nil
	}
	n, ok := observed.(interface{ Int64() (int64, error) })
	if !ok {
		return false
	}
	v, err := n.Int64()
	return err == nil && v == gen
}

// withDesiredStatus returns a copy of obj with the status it should have and without
// managedFields (the server keeps its own).
func withDesiredStatus(obj object) object {
	out := object{}
	for k, v := range obj {
		out[k] = v
	}
	meta := map[string]interface{}{}
	for k, v := range obj.meta() {
		if k != "managedFields" {
			meta[k] = v
		}
	}
	out["metadata"] = meta
	status := map[string]interface{}{"ready": true}
	if gen, ok := obj.generation(); ok {
		status["observedGeneration"] = gen
	}
	out["status"] = status
	return out
}

type reconciler struct {
	kube    *kubeClient
	gate    *leaderclient.Gate
	metrics *metrics
	log     *Logger
	backoff *backoff
}

// reconcile brings one object's status up to date. It returns the object the API server
// answered with after a write (nil otherwise).
func (r *reconciler) reconcile(ctx context.Context, obj object) (outcome, object, error) {
	if statusUpToDate(obj) {
		return unchanged, nil, nil
	}
	if obj.key() == "" {
		return 0, nil, errUnaddressable
	}
	desired := withDesiredStatus(obj)
	// The last check before the write leaves this process; the write is abandoned when the
	// grant ends before it is answered (the request's context has the grant's end as its
	// deadline, on the monotonic clock, and net/http checks it before sending).
	grant, ok := r.gate.Current()
	if !ok {
		return 0, nil, errNotLeader
	}
	wctx, cancel := context.WithDeadline(ctx, grant.Until)
	defer cancel()
	answer, err := r.kube.replaceStatus(wctx, desired)
	if err == nil {
		r.log.Info("status ready", "object", obj.key(), "term", grant.Term)
		return updated, answer, nil
	}
	if ctx.Err() != nil {
		return 0, nil, errWindowStopped
	}
	if !time.Now().Before(grant.Until) && errors.Is(err, context.DeadlineExceeded) {
		return 0, nil, errGrantExpired
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.Code {
		case 404:
			return gone, nil, nil
		case 409:
			return r.afterConflict(ctx, obj, ae)
		}
	}
	r.metrics.apiError("newresources/status", "update", errorCode(err))
	return 0, nil, apiFailure(err)
}

// afterConflict tells the two meanings of a 409 apart. The object changed since we read it (a
// real conflict, retried), or it is gone: the body carries the object's UID, which the API
// server checks as a precondition before it looks for the object, so a write to a deleted
// object (or to a new object that took its name) is a 409, not a 404. One re-read (a list by
// name, so no verb beyond list is needed) decides: no object with our UID means ours is gone.
func (r *reconciler) afterConflict(ctx context.Context, obj object, conflict *apiError) (outcome, object, error) {
	query := url.Values{"fieldSelector": {"metadata.name=" + obj.name()}}
	list, err := r.kube.list(ctx, obj.namespace(), query)
	stillOurs := true
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, errWindowStopped
		}
		r.metrics.apiError("newresources", "list", errorCode(err))
	} else {
		stillOurs = false
		for _, item := range list.Items {
			if item.uid() == obj.uid() {
				stillOurs = true
			}
		}
	}
	if !stillOurs {
		return gone, nil, nil
	}
	return 0, nil, &reconcileError{"conflict", fmt.Errorf("conflict: %s", conflict.Message)}
}

// backoff is per-object exponential backoff: 200 ms, doubling, at most a minute; reset on
// success.
type backoff struct {
	mu       sync.Mutex
	failures map[string]uint
}

const (
	backoffBase = 200 * time.Millisecond
	backoffMax  = time.Minute
)

func newBackoff() *backoff { return &backoff{failures: map[string]uint{}} }

func (b *backoff) next(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.failures[key]
	d := backoffMax
	if n < 20 {
		d = backoffBase << n
		if d > backoffMax {
			d = backoffMax
		}
	}
	if n < 1000 {
		b.failures[key] = n + 1
	}
	return d
}

func (b *backoff) reset(key string) {
	b.mu.Lock()
	delete(b.failures, key)
	b.mu.Unlock()
}
