//! Paths of the workspace's binaries for end-to-end tests, and the entry point of this
//! package's own tools.
//!
//! `cargo test --workspace` builds every binary of a package that has integration tests
//! before any test runs; they land next to the test executables' `deps/` directory.

use std::path::PathBuf;

/// The path of workspace binary `name`: `$<NAME>_BIN` (upper case, `-` as `_`) if set, else
/// the binary in this build's target directory. Panics when it is missing (for tests).
pub fn binary(name: &str) -> PathBuf {
    try_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The cargo profile whose output directory `dir` (`target/<dir>`) is: `dev` for `debug`.
pub fn cargo_profile(dir: &std::path::Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    Some(if name == "debug" { "dev" } else { name }.to_owned())
}

/// The output directory of this build, `target/<profile>`: where this executable lives
/// (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`), and the workspace binaries too.
pub fn profile_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The cargo profile this executable was built with (from where it lives).
pub fn own_profile() -> Option<String> {
    cargo_profile(&profile_dir().ok()?)
}

/// Like [`binary`], with an error instead of a panic (for the demo and the bench, whose `lto`
/// builds abort on panic).
pub fn try_binary(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let dir = profile_dir()?;
    let path = dir.join(name);
    let profile = match cargo_profile(&dir).as_deref() {
        Some("dev") | None => String::new(),
        Some("release") => " --release".to_owned(),
        Some(other) => format!(" --profile {other}"),
    };
    anyhow::ensure!(
        path.exists(),
        "{} not found; build it first (cargo build{profile} -p {name}) or set {var}",
        path.display()
    );
    Ok(path)
}

/// Runs the async `main` of one of this package's tools (the demo, the bench) on a
/// multi-threaded runtime; an error is printed as one line, `<name>: <error chain>`, with
/// exit status 1.
pub fn run_tool(
    name: &str,
    main: impl std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(main).unwrap_or_else(|e| {
        eprintln!("{name}: {e:#}");
        std::process::ExitCode::FAILURE
    })
}
