package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	leaderclient "github.com/leader-sidecar/leader-client-go"
)

// Flags, each with an environment variable, with the names, defaults and meaning of the Rust
// controller's (controller/src/config.rs) and the Python one's, so the Deployment in deploy/
// runs this controller with its args unchanged. Everything is validated before anything
// starts; a bad value exits with status 2 and one line. A wrong --leader-url is never taken
// for "no sidecar, so act anyway".

const (
	program = "newresource-controller (go)"
	version = "0.1.0"

	inClusterToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	inClusterCA    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// settings are the validated flags.
type settings struct {
	// namespace "" means all namespaces.
	namespace string
	// leaderURL "" means --leader-elect=false.
	leaderURL          string
	leaderPollInterval time.Duration
	maxConcurrent      int
	// metricsAddr and healthAddr are "" when disabled with 0.
	metricsAddr, healthAddr string
	logFormat               string
	api                     apiAccess
	apiTimeout              time.Duration
}

type flagDef struct {
	name, env, def, help string
}

var flagDefs = []flagDef{
	{"kubeconfig", "KUBECONFIG", "", "Kubeconfig file (token, tokenFile, client certificate; CA or insecure-skip-tls-verify) [default: --server, else in-cluster]"},
	{"namespace", "WATCH_NAMESPACE", "", "Reconcile only this namespace [default: all namespaces]"},
	{"leader-elect", "LEADER_ELECT", "true", "Follow the sidecar's leadership; --leader-elect=false reconciles always (one replica, development)"},
	{"leader-url", "LEADER_URL", "http://127.0.0.1:4040", "Base URL of the sidecar's leader API"},
	{"leader-poll-interval", "LEADER_POLL_INTERVAL", "1s", "How often to poll GET /leader while the /leader/watch stream is unavailable (e.g. 500ms, 1s, 1m30s)"},
	{"max-concurrent-reconciles", "MAX_CONCURRENT_RECONCILES", "1", "Objects reconciled at the same time"},
	{"metrics-bind-address", "METRICS_BIND_ADDRESS", ":8080", "Address of /metrics (`:8080` means every interface; `0` disables)"},
	{"health-probe-bind-address", "HEALTH_PROBE_BIND_ADDRESS", ":8081", "Address of /healthz and /readyz (`:8081` means every interface; `0` disables)"},
	{"log-format", "LOG_FORMAT", "text", "Log format: text or json"},
	{"server", "KUBE_API_SERVER", "", "Kubernetes API server URL (instead of a kubeconfig)"},
	{"token-file", "KUBE_TOKEN_FILE", "", "Bearer token file for --server, re-read when it changes"},
	{"certificate-authority", "KUBE_CA_FILE", "", "CA bundle for --server [default: the system trust store]"},
	{"api-timeout", "API_TIMEOUT", "10s", "Timeout of each Kubernetes API request other than watches"},
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...interface{}) error {
	return &usageError{fmt.Sprintf(format, a...)}
}

// errHelp: --help or --version was printed.
var errHelp = errors.New("help printed")

// parseSettings parses argv (without the program name) and the environment. Where the API
// access comes from, first match wins: --kubeconfig, --server (flags), then KUBECONFIG,
// KUBE_API_SERVER (environment), then the in-cluster service account.
func parseSettings(argv []string, getenv func(string) string, stdout io.Writer) (settings, error) {
	fs := flag.NewFlagSet("newresource-controller", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := map[string]*string{}
	for _, d := range flagDefs {
		if d.name == "leader-elect" {
			continue
		}
		values[d.name] = fs.String(d.name, "", d.help)
	}
	leaderElect := &boolFlag{}
	fs.Var(leaderElect, "leader-elect", "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	showVersion := fs.Bool("version", false, "")
	if err := fs.Parse(argv); err != nil {
		return settings{}, usagef("%v", err)
	}
	if *help {
		printHelp(stdout)
		return settings{}, errHelp
	}
	if *showVersion {
		fmt.Fprintf(stdout, "%s %s\n", program, version)
		return settings{}, errHelp
	}
	if fs.NArg() > 0 {
		return settings{}, usagef("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	// pick returns the raw value, where it came from (for messages), and whether it was set.
	pick := func(name string) (string, string, bool) {
		for _, d := range flagDefs {
			if d.name != name {
				continue
			}
			if given[name] {
				if name == "leader-elect" {
					return leaderElect.raw, "--" + name, true
				}
				return *values[name], "--" + name, true
			}
			// An empty variable counts as unset (as clap treats it).
			if v := getenv(d.env); v != "" {
				return v, fmt.Sprintf("%s (env of --%s)", d.env, name), true
			}
			return d.def, "--" + name, false
		}
		panic("unknown flag " + name)
	}
	invalid := func(raw, source string, err error) error {
		return usagef("invalid value %q for %s: %v", raw, source, err)
	}
	var s settings
	s.namespace, _, _ = pick("namespace")

	raw, src, _ := pick("leader-elect")
	elect, err := parseBool(raw)
	if err != nil {
		return settings{}, invalid(raw, src, err)
	}
	raw, src, _ = pick("leader-poll-interval")
	if s.leaderPollInterval, err = parseDuration(raw); err != nil {
		return settings{}, invalid(raw, src, err)
	}
	if s.leaderPollInterval <= 0 {
		return settings{}, usagef("--leader-poll-interval must be positive")
	}
	if elect {
		raw, src, _ = pick("leader-url")
		c, err := leaderclient.NewClient(raw)
		if err != nil {
			if src != "--leader-url" {
				return settings{}, usagef("%v (from %s)", err, src)
			}
			return settings{}, &usageError{err.Error()}
		}
		s.leaderURL = c.BaseURL()
	}
	raw, src, _ = pick("max-concurrent-reconciles")
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || n < 1 || n > 65535 {
		return settings{}, invalid(raw, src, errors.New("expected a whole number in 1..=65535"))
	}
	s.maxConcurrent = n
	raw, src, _ = pick("metrics-bind-address")
	if s.metricsAddr, err = parseBindAddress(raw); err != nil {
		return settings{}, invalid(raw, src, err)
	}
	raw, src, _ = pick("health-probe-bind-address")
	if s.healthAddr, err = parseBindAddress(raw); err != nil {
		return settings{}, invalid(raw, src, err)
	}
	if s.metricsAddr != "" && s.metricsAddr == s.healthAddr && !strings.HasSuffix(s.metricsAddr, ":0") {
		return settings{}, usagef("--metrics-bind-address and --health-probe-bind-address are both %s", s.metricsAddr)
	}
	raw, src, _ = pick("log-format")
	if raw != "text" && raw != "json" {
		return settings{}, invalid(raw, src, errors.New("expected text or json"))
	}
	s.logFormat = raw
	raw, src, _ = pick("api-timeout")
	if s.apiTimeout, err = parseDuration(raw); err != nil {
		return settings{}, invalid(raw, src, err)
	}
	if s.apiTimeout <= 0 {
		return settings{}, usagef("--api-timeout must be positive")
	}

	kubeconfig, kcSrc, kcSet := pick("kubeconfig")
	server, serverSrc, serverSet := pick("server")
	tokenFile, _, _ := pick("token-file")
	caFile, _, _ := pick("certificate-authority")
	useKubeconfig := kcSet && (given["kubeconfig"] || !given["server"])
	switch {
	case useKubeconfig:
		if s.api, err = loadKubeconfig(kubeconfig); err != nil {
			return settings{}, usagef("%v (from %s)", err, kcSrc)
		}
	case serverSet:
		if s.api.Server, err = validateServer(server); err != nil {
			return settings{}, usagef("%v (from %s)", err, serverSrc)
		}
		s.api.From = "--server"
		s.api.TokenFile = tokenFile
		if caFile != "" {
			if s.api.CAData, err = os.ReadFile(caFile); err != nil {
				return settings{}, usagef("cannot read the CA file: %v", err)
			}
		}
	default:
		host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return settings{}, usagef("no Kubernetes API server: give --kubeconfig or --server (and --token-file, --certificate-authority as needed), or run in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT)")
		}
		if s.api.Server, err = validateServer("https://" + net.JoinHostPort(host, port)); err != nil {
			return settings{}, usagef("invalid in-cluster API address: %v", err)
		}
		// The pod's own credentials go only to the in-cluster server: sending the service
		// account token to a server named by --server is an explicit choice (--token-file).
		s.api.From = "in-cluster service account"
		s.api.TokenFile = inClusterToken
		if tokenFile != "" {
			s.api.TokenFile = tokenFile
		}
		if caFile == "" {
			caFile = inClusterCA
		}
		if s.api.CAData, err = os.ReadFile(caFile); err != nil {
			return settings{}, usagef("cannot read the in-cluster CA: %v", err)
		}
	}
	return s, nil
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "Reconciles NewResource objects (apps.newresource.com/v1alpha1) while the leader sidecar in the\nsame pod grants leadership. Go port of newresource-controller.\n\nUsage: newresource-controller [OPTIONS]\n\nOptions:\n")
	for _, d := range flagDefs {
		def := d.def
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s\n      %s [env: %s] [default: %s]\n", d.name, d.help, d.env, def)
	}
	fmt.Fprintf(w, "  --help\n  --version\n")
}

// boolFlag is --leader-elect: bare means true, --leader-elect=false switches off.
type boolFlag struct{ raw string }

func (b *boolFlag) String() string     { return b.raw }
func (b *boolFlag) Set(v string) error { b.raw = v; return nil }
func (b *boolFlag) IsBoolFlag() bool   { return true }

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New("expected true or false")
}

var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond, "nsec": time.Nanosecond, "nanos": time.Nanosecond,
	"us": time.Microsecond, "µs": time.Microsecond, "usec": time.Microsecond, "micros": time.Microsecond,
	"ms": time.Millisecond, "msec": time.Millisecond, "millis": time.Millisecond,
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
}

// parseDuration parses human durations as the Rust controller's humantime does: 500ms, 1s,
// 2m, 1m30s, "1m 30s" (whole numbers with units, summed).
func parseDuration(s string) (time.Duration, error) {
	text := strings.TrimSpace(s)
	if text == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for text != "" {
		i := 0
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			i++
		}
		j := i
		for j < len(text) && text[j] != ' ' && (text[j] < '0' || text[j] > '9') {
			j++
		}
		if i == 0 || j == i {
			return 0, fmt.Errorf("invalid duration %q: expected e.g. 500ms, 1s, 2m, 1m30s", s)
		}
		n, err := strconv.ParseInt(text[:i], 10, 64)
		unit, ok := durationUnits[text[i:j]]
		if err != nil || !ok {
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q", s, text[i:j])
		}
		if n > int64(1<<62)/int64(unit) {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		total += time.Duration(n) * unit
		text = strings.TrimLeft(text[j:], " ")
	}
	return total, nil
}

// parseBindAddress parses controller-runtime style addresses: :8080 (every IPv4 interface),
// 127.0.0.1:8080, [::1]:8080, localhost:8080, or 0 (disabled, ""). Hosts must be IP literals
// (or localhost): binding must not depend on DNS.
func parseBindAddress(s string) (string, error) {
	if s == "0" {
		return "", nil
	}
	bad := fmt.Errorf("invalid address %q: expected :PORT, HOST:PORT or 0", s)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", bad
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || strings.HasPrefix(port, "+") {
		return "", fmt.Errorf("invalid address %q: bad port", s)
	}
	switch {
	case host == "":
		host = "0.0.0.0"
	case host == "localhost":
		host = "127.0.0.1"
	case net.ParseIP(host) == nil:
		return "", bad
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// validateServer checks http(s)://host[:port][/prefix] and drops a trailing slash.
func validateServer(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid API server %q: %v", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid API server %q: expected https://host:port (or http:// for local runs)", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("invalid API server %q: expected https://host:port[/path]", raw)
	}
	return strings.TrimRight(raw, "/"), nil
}
