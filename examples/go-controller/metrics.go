package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Rust controller's metrics (controller/src/metrics.rs), same names and labels, in the
// OpenMetrics text format: controller_reconcile_total{result}, controller_reconcile_errors_total
// {error_type}, controller_reconcile_duration_seconds, controller_leader,
// controller_active_windows_total, controller_api_errors_total{resource,verb,code}; every
// series carries controller="newresource".

const controllerLabel = `controller="newresource"`

// durationBuckets: 0.5 ms doubling, 16 buckets (the Rust controller's).
var durationBuckets = func() []float64 {
	out := make([]float64, 16)
	for i := range out {
		out[i] = 0.0005 * math.Pow(2, float64(i))
	}
	return out
}()

type metrics struct {
	mu         sync.Mutex
	reconciles map[string]uint64 // by result
	errors     map[string]uint64 // by error_type
	apiErrors  map[[3]string]uint64
	leader     bool
	windows    uint64
	buckets    []uint64
	sum        float64
	count      uint64
}

func newMetrics() *metrics {
	return &metrics{
		// Exported at zero from the start, so dashboards and alerts see them.
		reconciles: map[string]uint64{"success": 0, "error": 0, "not_found": 0},
		errors:     map[string]uint64{},
		apiErrors:  map[[3]string]uint64{},
		buckets:    make([]uint64, len(durationBuckets)),
	}
}

func (m *metrics) reconciled(started time.Time, result, errorType string) {
	d := time.Since(started).Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reconciles[result]++
	if errorType != "" {
		m.errors[errorType]++
	}
	for i, le := range durationBuckets {
		if d <= le {
			m.buckets[i]++
		}
	}
	m.sum += d
	m.count++
}

func (m *metrics) apiError(resource, verb, code string) {
	m.mu.Lock()
	m.apiErrors[[3]string{resource, verb, code}]++
	m.mu.Unlock()
}

func (m *metrics) setLeader(active bool) {
	m.mu.Lock()
	m.leader = active
	m.mu.Unlock()
}

func (m *metrics) windowStarted() {
	m.mu.Lock()
	m.windows++
	m.mu.Unlock()
}

func sortedKeys(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// encode renders the OpenMetrics text.
func (m *metrics) encode() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("# HELP controller_reconcile Reconciles by result (success, error, not_found).\n# TYPE controller_reconcile counter\n")
	for _, r := range sortedKeys(m.reconciles) {
		fmt.Fprintf(&b, "controller_reconcile_total{%s,result=\"%s\"} %d\n", controllerLabel, quote(r), m.reconciles[r])
	}
	b.WriteString("# HELP controller_reconcile_errors Failed reconciles by error type.\n# TYPE controller_reconcile_errors counter\n")
	for _, e := range sortedKeys(m.errors) {
		fmt.Fprintf(&b, "controller_reconcile_errors_total{%s,error_type=\"%s\"} %d\n", controllerLabel, quote(e), m.errors[e])
	}
	b.WriteString("# HELP controller_reconcile_duration_seconds Duration of reconciles, successful or not.\n# TYPE controller_reconcile_duration_seconds histogram\n")
	fmt.Fprintf(&b, "controller_reconcile_duration_seconds_sum{%s} %s\n", controllerLabel, fmtFloat(m.sum))
	fmt.Fprintf(&b, "controller_reconcile_duration_seconds_count{%s} %d\n", controllerLabel, m.count)
	for i, le := range durationBuckets {
		fmt.Fprintf(&b, "controller_reconcile_duration_seconds_bucket{le=\"%s\",%s} %d\n", fmtFloat(le), controllerLabel, m.buckets[i])
	}
	fmt.Fprintf(&b, "controller_reconcile_duration_seconds_bucket{le=\"+Inf\",%s} %d\n", controllerLabel, m.count)
	b.WriteString("# HELP controller_leader 1 while this controller's workers run under a grant from the sidecar, else 0.\n# TYPE controller_leader gauge\n")
	leader := 0
	if m.leader {
		leader = 1
	}
	fmt.Fprintf(&b, "controller_leader{%s} %d\n", controllerLabel, leader)
	b.WriteString("# HELP controller_active_windows Active windows started (times this controller became the active one).\n# TYPE controller_active_windows counter\n")
	fmt.Fprintf(&b, "controller_active_windows_total{%s} %d\n", controllerLabel, m.windows)
	b.WriteString("# HELP controller_api_errors Failed Kubernetes API requests by resource, verb and code (HTTP status, timeout or transport).\n# TYPE controller_api_errors counter\n")
	keys := make([][3]string, 0, len(m.apiErrors))
	for k := range m.apiErrors {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Join(keys[i][:], "\x00") < strings.Join(keys[j][:], "\x00") })
	for _, k := range keys {
		fmt.Fprintf(&b, "controller_api_errors_total{%s,resource=\"%s\",verb=\"%s\",code=\"%s\"} %d\n", controllerLabel, quote(k[0]), quote(k[1]), quote(k[2]), m.apiErrors[k])
	}
	b.WriteString("# EOF\n")
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }
