//! Paths of the workspace's binaries for end-to-end tests.
//!
//! `cargo test --workspace` builds every binary of a package that has integration tests
//! before any test runs; they land next to the test executables' `deps/` directory.

use std::path::PathBuf;

/// The path of workspace binary `name`: `$<NAME>_BIN` (upper case, `-` as `_`) if set, else
/// the binary in this build's target directory.
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build it first (cargo build --workspace --bins) or set {var}",
        path.display()
    );
    path
}
