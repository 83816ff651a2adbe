package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaultsAndEnvironmentAsTheConformanceSuiteSetsThem(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", "tok")
	s, err := parseSettings(nil, env(map[string]string{
		"LEADER_URL":                "http://127.0.0.1:4555/",
		"WATCH_NAMESPACE":           "ns",
		"KUBE_API_SERVER":           "http://127.0.0.1:9999",
		"KUBE_TOKEN_FILE":           tokenFile,
		"LOG_FORMAT":                "json",
		"HEALTH_PROBE_BIND_ADDRESS": "127.0.0.1:0",
		"METRICS_BIND_ADDRESS":      "127.0.0.1:0",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.leaderURL != "http://127.0.0.1:4555" || s.namespace != "ns" || s.logFormat != "json" ||
		s.api.Server != "http://127.0.0.1:9999" || s.api.TokenFile != tokenFile ||
		s.healthAddr != "127.0.0.1:0" || s.metricsAddr != "127.0.0.1:0" ||
		s.leaderPollInterval != time.Second || s.maxConcurrent != 1 || s.apiTimeout != 10*time.Second {
		t.Fatalf("%+v", s)
	}
}

func TestTheDeploymentsArgsParse(t *testing.T) {
	s, err := parseSettings([]string{
		"--leader-elect=true", "--leader-url=http://127.0.0.1:4040", "--leader-poll-interval=1s",
		"--max-concurrent-reconciles=1", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
		"--server", "https://10.0.0.1:443",
	}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.metricsAddr != "0.0.0.0:8080" || s.healthAddr != "0.0.0.0:8081" || s.leaderURL != "http://127.0.0.1:4040" {
		t.Fatalf("%+v", s)
	}
	s, err = parseSettings([]string{"--leader-elect=false", "--server=http://h:1"}, env(map[string]string{"LEADER_URL": "bogus"}), io.Discard)
	if err != nil || s.leaderURL != "" {
		t.Fatalf("leader election off: %+v %v", s, err)
	}
}

func TestBadValuesAreOneLineErrors(t *testing.T) {
	base := map[string]string{"KUBE_API_SERVER": "http://h:1"}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--leader-url=http://x:4040/leader"}, nil, "without a path"},
		{nil, map[string]string{"LEADER_URL": "https://x"}, "(from LEADER_URL (env of --leader-url))"},
		{[]string{"--leader-poll-interval=0s"}, nil, "must be positive"},
		{[]string{"--leader-poll-interval=fast"}, nil, "invalid value \"fast\""},
		{[]string{"--max-concurrent-reconciles=0"}, nil, "1..=65535"},
		{[]string{"--metrics-bind-address=:9000", "--health-probe-bind-address=0.0.0.0:9000"}, nil, "are both"},
		{[]string{"--metrics-bind-address=example.com:80"}, nil, "expected :PORT"},
		{[]string{"--log-format=xml"}, nil, "text or json"},
		{[]string{"--leader-elect=maybe"}, nil, "true or false"},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{[]string{"--server=ftp://x"}, nil, "expected https://"},
	}
	for _, c := range cases {
		e := map[string]string{}
		for k, v := range base {
			e[k] = v
		}
		for k, v := range c.env {
			e[k] = v
		}
		_, err := parseSettings(c.args, env(e), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: got %v, want one line with %q", c.args, c.env, err, c.want)
		}
	}
	if _, err := parseSettings(nil, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("no API server: %v", err)
	}
}

func TestKubeconfigAndServerPrecedence(t *testing.T) {
	dir := t.TempDir()
	kc := writeFile(t, dir, "kc", "current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\nclusters:\n- name: c\n  cluster:\n    server: http://from-kubeconfig:1\nusers:\n- name: u\n  user:\n    token: t\n")
	both := map[string]string{"KUBECONFIG": kc, "KUBE_API_SERVER": "http://from-env:1"}
	s, err := parseSettings(nil, env(both), io.Discard)
	if err != nil || s.api.Server != "http://from-kubeconfig:1" || s.api.Token != "t" {
		t.Fatalf("env: KUBECONFIG first: %+v %v", s.api, err)
	}
	s, err = parseSettings([]string{"--server=http://from-flag:1"}, env(both), io.Discard)
	if err != nil || s.api.Server != "http://from-flag:1" || s.api.Token != "" {
		t.Fatalf("a flag beats the environment: %+v %v", s.api, err)
	}
	// In a pod: the service account's token and CA.
	ca := writeFile(t, dir, "ca.crt", "PEM")
	s, err = parseSettings([]string{"--certificate-authority", ca}, env(map[string]string{
		"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
	}), io.Discard)
	if err != nil || s.api.Server != "https://[fd00::1]:443" || s.api.TokenFile != inClusterToken || string(s.api.CAData) != "PEM" {
		t.Fatalf("in-cluster: %+v %v", s.api, err)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"500ms": 500 * time.Millisecond, "1s": time.Second, "2m": 2 * time.Minute,
		"1m30s": 90 * time.Second, "1m 30s": 90 * time.Second, "1h": time.Hour,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "1", "s", "1x", "1.5s", "-1s"} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
