//! `newresource-controller`: reconciles `NewResource` objects while the sidecar says it leads.
//! The controller arrives with issue #4; until then the binary only says so.

fn main() {
    eprintln!("newresource-controller: not implemented yet (issue #4)");
    std::process::exit(2);
}
