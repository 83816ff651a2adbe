module github.com/leader-sidecar/leader-client-go

go 1.19
