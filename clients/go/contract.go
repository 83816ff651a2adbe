// Package leaderclient lets a Go controller act only while its leader-sidecar grants
// leadership, following the contract in docs/leader-api.md of the leader-sidecar repository.
//
// The pieces, from the bottom up:
//
//   - [LeaderStatus] and [YieldResponse]: the bodies of GET /leader, the /leader/watch events
//     and POST /leader/yield.
//   - [Client]: the HTTP client for those three calls, with a server-sent-events reader.
//   - [GateState]: the pure state machine that decides whether this process may act (no I/O,
//     no clock: every input carries its instant). Its safety argument is written at its type.
//   - [Follower]: drives a GateState from the sidecar (GET /leader polling plus the
//     /leader/watch stream, with reconnects) and publishes its view to a [Gate].
//   - [Gate]: what workers hold: the grant in force now (checked against the monotonic clock
//     each time), and waits for a window to open or close.
//   - [RunWhileLeader]: runs a function with a context only while leadership is granted, and
//     cancels that context when the grant ends; it logs each active window with its term.
//
// Standard library only.
package leaderclient

// Paths of the leader API.
const (
	PathLeader = "/leader"
	PathWatch  = "/leader/watch"
	PathYield  = "/leader/yield"
	// EventLeader is the SSE event type of /leader/watch; other types are reserved and ignored.
	EventLeader = "leader"
)

// LeaderStatus is the body of GET /leader and the data of each /leader/watch event.
type LeaderStatus struct {
	// IsLeader: this pod is leader and (from GET /leader only) the answer is a grant.
	IsLeader bool `json:"is_leader"`
	// Identity is the sidecar's identity.
	Identity string `json:"identity"`
	// Holder is the holder recorded in the Lease as last observed; nil when free or unknown.
	Holder *string `json:"holder"`
	// Lease is "<namespace>/<name>".
	Lease string `json:"lease"`
	// Term is the fencing token: the Lease's leaseTransitions when this tenure began (leader)
	// or as last observed (follower). nil when unknown.
	Term *int64 `json:"term"`
	// ValidForMs is the length of the grant in milliseconds; 0 when IsLeader is false.
	ValidForMs uint64 `json:"valid_for_ms"`
	// ObservedAt and RenewedAt are informational wall-clock times (RFC 3339); never used for
	// decisions.
	ObservedAt *string `json:"observed_at"`
	RenewedAt  *string `json:"renewed_at"`
}

// YieldResponse is the body of POST /leader/yield.
type YieldResponse struct {
	WasLeader bool   `json:"was_leader"`
	BackoffMs uint64 `json:"backoff_ms"`
}

// sameTerm compares optional terms.
func sameTerm(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}
