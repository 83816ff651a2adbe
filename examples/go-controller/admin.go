package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// Probes and metrics: /metrics on --metrics-bind-address, /healthz and /readyz on
// --health-probe-bind-address (controller/src/admin.rs).
//
// /healthz fails only when the leadership follower has stopped turning (a wedged process the
// kubelet should restart); never because of leadership or an API outage. /readyz is 200 when
// the sidecar (with --leader-elect) and the API answer; standbys are ready.

const apiCheckEvery = 10 * time.Second

type probes struct {
	gate         *leaderclient.Gate
	follower     *leaderclient.Follower // nil without leader election
	apiOK        atomic.Bool
	wedgedAfter  time.Duration
	needsSidecar bool
}

func (p *probes) healthy(now time.Time) error {
	if p.follower == nil {
		return nil
	}
	beat := p.follower.Heartbeat()
	if beat.IsZero() {
		return nil // starting
	}
	if age := now.Sub(beat); age >= p.wedgedAfter {
		return fmt.Errorf("the leadership follower has not run for %dms", age.Milliseconds())
	}
	return nil
}

func (p *probes) ready() error {
	if p.needsSidecar && !p.gate.Reachable() {
		return fmt.Errorf("the leader sidecar is not reachable")
	}
	if !p.apiOK.Load() {
		return fmt.Errorf("the Kubernetes API is not reachable (or newresources cannot be listed)")
	}
	return nil
}

func onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	httpError(w, http.StatusMethodNotAllowed, "only GET and HEAD are served here")
	return false
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

func (p *probes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !onlyGet(w, r) {
		return
	}
	var err error
	switch r.URL.Path {
	case "/healthz":
		err = p.healthy(time.Now())
	case "/readyz":
		err = p.ready()
	default:
		httpError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
		return
	}
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func metricsHandler(m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !onlyGet(w, r) {
			return
		}
		if r.URL.Path != "/metrics" {
			httpError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
			return
		}
		w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
		fmt.Fprint(w, m.encode())
	})
}

func serve(l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second}
	_ = srv.Serve(l)
}

// checkAPI keeps apiOK current for /readyz: a one-item list of NewResources, which needs the
// permission the workers need first. Failures count in controller_api_errors_total; the log
// says when the outcome changes, not at every check.
func checkAPI(ctx context.Context, k *kubeClient, namespace string, p *probes, m *metrics, log *Logger) {
	was := ""
	for {
		_, err := k.list(ctx, namespace, url.Values{"limit": {"1"}})
		if ctx.Err() != nil {
			return
		}
		state := "ok"
		if err != nil {
			state = errorCode(err)
			m.apiError(resource, "list", state)
		}
		p.apiOK.Store(err == nil)
		if state != was {
			if err == nil {
				log.Info("connected to the Kubernetes API")
			} else {
				log.Error("cannot list newresources", "resource", resource, "verb", "list", "code", state, "error", err.Error())
			}
			was = state
		}
		t := time.NewTimer(apiCheckEvery)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}
