module github.com/leader-sidecar/go-controller

go 1.19

require github.com/leader-sidecar/leader-client-go v0.0.0

// The client module lives in this repository: built from source, offline, no go.sum entry.
replace github.com/leader-sidecar/leader-client-go => ../../clients/go
