//! The baseline of the `/leader` load: a bare hyper 1.x HTTP/1.1 server answering every
//! request with one constant body, in a process of its own (the bench binary run again with
//! `--serve-baseline`), so that it is pinned, sampled and loaded exactly as the sidecar is.
//!
//! It is what the sidecar's leader API costs at the least with the same stack: the same hyper,
//! hyper-util and tokio versions (the workspace's), the same runtime flavour as the sidecar's
//! HTTP thread (a current-thread runtime on one thread), `TCP_NODELAY` on every connection as
//! the sidecar sets it, and the sidecar's own `/leader` body (its bytes, read from the sidecar
//! under test) with the same two headers (`content-type: application/json`,
//! `cache-control: no-store`; hyper adds `content-length` and `date` to both). What it leaves
//! out is everything the sidecar does on top: connection slots, the header-read timer, the
//! small send buffer, routing and method checks, the grant and its JSON, and the request metric.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::Context;
use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

/// The hidden flag of the bench binary that runs [`serve`] instead of the bench.
pub const FLAG: &str = "--serve-baseline";

/// Serves `body` on an ephemeral 127.0.0.1 port until killed; prints the address on stdout.
pub fn serve(body: Vec<u8>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the baseline runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut out = std::io::stdout();
        writeln!(out, "{}", listener.local_addr()?)?;
        out.flush()?;
        let body = Bytes::from(body);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let mut r = Response::new(Full::new(body.clone()));
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    h.insert(
                        header::CACHE_CONTROL,
                        header::HeaderValue::from_static("no-store"),
                    );
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A running baseline server process; killed on drop (and when the bench dies).
pub struct Baseline {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Baseline {
    /// Starts `<this executable> --serve-baseline <body>` and waits for its address.
    pub async fn spawn(body: &[u8]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot locate the bench executable")?;
        let body = std::str::from_utf8(body).context("the /leader body is not UTF-8")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg(FLAG)
            .arg(body)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        testkit::process::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .context("cannot start the baseline server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the baseline server did not start within 10 s")??;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the baseline server printed {line:?}"))?;
        Ok(Self { child, addr })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
