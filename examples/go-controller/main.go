// newresource-controller in Go: reconciles NewResource objects (apps.newresource.com/v1alpha1)
// only while the leader-sidecar in the same pod grants leadership, through the
// clients/go module (leaderclient). Standard library only.
//
// Startup and shutdown order: flags are validated before anything starts; the probe and
// metrics ports are bound and the startup line names them; the follower keeps the gate in
// step with the sidecar; leaderclient.RunWhileLeader opens and closes active windows. After
// SIGTERM (or SIGINT) the open window is closed (workers stopped, every request abandoned),
// then the controller yields (POST /leader/yield), logs "newresource-controller stopped" and
// exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// yieldTimeout bounds the yield on shutdown (the sidecar then releases after our last grant
// runs out).
const yieldTimeout = 2 * time.Second

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(argv []string) int {
	s, err := parseSettings(argv, os.Getenv, os.Stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: %s\n", program, err)
		return 2
	}
	log := newLogger(os.Stderr, s.logFormat)
	if err := runController(s, log); err != nil {
		log.Error("newresource-controller failed", "error", err.Error())
		return 1
	}
	return 0
}

func listen(addr, flag string) (net.Listener, string, error) {
	if addr == "" {
		return nil, "disabled", nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("cannot listen on %s (%s): %w", addr, flag, err)
	}
	return l, l.Addr().String(), nil
}

func runController(s settings, log *Logger) error {
	kube, err := newKubeClient(s.api, s.apiTimeout)
	if err != nil {
		return fmt.Errorf("cannot build the Kubernetes client: %w", err)
	}
	metricsListener, metricsAddr, err := listen(s.metricsAddr, "--metrics-bind-address")
	if err != nil {
		return err
	}
	healthListener, healthAddr, err := listen(s.healthAddr, "--health-probe-bind-address")
	if err != nil {
		return err
	}
	leaderURL, namespace := s.leaderURL, s.namespace
	if leaderURL == "" {
		leaderURL = "none (--leader-elect=false)"
	}
	if namespace == "" {
		namespace = "all"
	}
	log.Info("newresource-controller starting", "leader_url", leaderURL, "namespace", namespace,
		"metrics", metricsAddr, "health", healthAddr, "api", s.api.Server, "credentials", s.api.From, "version", version)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The follower and the API check outlive the workers: they stop after the yield.
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	m := newMetrics()
	p := &probes{wedgedAfter: 10 * s.leaderPollInterval, needsSidecar: s.leaderURL != ""}
	if p.wedgedAfter < 10*time.Second {
		p.wedgedAfter = 10 * time.Second
	}
	var sidecar *leaderclient.Client
	if s.leaderURL != "" {
		if sidecar, err = leaderclient.NewClient(s.leaderURL); err != nil {
			return err
		}
		p.gate = leaderclient.NewGate()
		p.follower = &leaderclient.Follower{Source: sidecar, PollInterval: s.leaderPollInterval, Gate: p.gate, Log: log.With("follow")}
		go p.follower.Run(background)
	} else {
		p.gate = leaderclient.AlwaysOpenGate()
	}
	go checkAPI(background, kube, s.namespace, p, m, log.With("admin"))
	if healthListener != nil {
		go serve(healthListener, p)
	}
	if metricsListener != nil {
		go serve(metricsListener, metricsHandler(m))
	}

	workersLog := log.With("workers")
	w := &workers{
		kube:        kube,
		namespace:   s.namespace,
		concurrency: s.maxConcurrent,
		metrics:     m,
		log:         workersLog,
		reconciler:  &reconciler{kube: kube, gate: p.gate, metrics: m, log: log.With("reconcile"), backoff: newBackoff()},
	}
	leaderclient.RunWhileLeader(ctx, p.gate, workersLog, w.runWindow)

	// Workers have stopped and every request of the window is abandoned or answered: let the
	// sidecar hand over now rather than when our grant runs out.
	if sidecar != nil {
		yctx, cancel := context.WithTimeout(context.Background(), yieldTimeout)
		answer, err := sidecar.Yield(yctx)
		cancel()
		if err != nil {
			log.Warn("could not yield leadership", "error", err.Error())
		} else {
			log.Info("yielded leadership", "was_leader", answer.WasLeader, "backoff_ms", answer.BackoffMs)
		}
	}
	log.Info("newresource-controller stopped")
	return nil
}
