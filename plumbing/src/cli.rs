//! Command-line plumbing: human durations, the log format switch, exit status 2 with a one-line
//! reason for bad flags (1 for a failure at run time), and shutdown signals.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// `text` (default) or `json` logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `15s`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parses flags; on a usage error prints one line (`<bin>: error: ...`) and exits with 2.
/// `--help` and `--version` print as usual and exit 0.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(t) => t,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let bin = program_name();
            // clap's first paragraph, folded to one line ("... not provided: --lease-name <..>").
            let rendered = e.to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = if first.is_empty() {
                "invalid arguments".to_owned()
            } else {
                first.join(" ")
            };
            eprintln!("{bin}: {line}");
            std::process::exit(2);
        }
    }
}

/// Reports a usage error found after parsing (flags that contradict each other) the same way:
/// one line, exit status 2.
pub fn exit_usage(message: &str) -> ! {
    eprintln!("{}: error: {message}", program_name());
    std::process::exit(2);
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// Runs a binary's async `main` on `runtime` and turns the outcome into the exit status,
/// logging a failure (the error chain on one line).
pub fn run_main(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs the tracing subscriber (`RUST_LOG` filters, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
