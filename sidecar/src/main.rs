//! `leader-sidecar`: holds a `coordination.k8s.io/v1` Lease and serves leadership on
//! `127.0.0.1:4040`. The elector arrives with issue #3; until then the binary only says so.

fn main() {
    eprintln!("leader-sidecar: not implemented yet (issue #3)");
    std::process::exit(2);
}
