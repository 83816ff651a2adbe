//! An in-memory Kubernetes API server for tests and the local demo.
//!
//! It exists because no real kube-apiserver can run here, and its value is fidelity: the
//! semantics our elector and controller depend on (resourceVersion compare-and-swap, 409/404
//! Status bodies, watch with bookmarks and 410, status subresource, generation, RBAC from real
//! Role objects) behave as in a real cluster, and faults can be injected on purpose.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use testkit::apiserver::{ApiServer, Config};
//! let server = ApiServer::start(Config::default()).await?;
//! let client = server.admin_client();
//! # Ok(()) }
//! ```

pub mod access_review;
pub mod audit;
pub mod auth;
pub mod conversion;
pub mod discovery;
pub mod faults;
pub mod fields;
pub mod http;
pub mod openapi;
pub mod protobuf;
pub mod registry;
pub mod selectors;
pub mod status;
pub mod store;
pub mod strategic;
pub mod table;
pub mod tokenrequest;
pub mod validation;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use auth::UserInfo;
pub use faults::{FaultAction, FaultMatch, FaultSpec, Faults};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Authorize with RBAC objects (otherwise every request is allowed, like
    /// `--authorization-mode=AlwaysAllow`).
    pub rbac: bool,
    /// How many changes the watch history keeps; a watch from an older resourceVersion gets
    /// 410 Expired.
    pub history_limit: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rbac: false,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(30),
        }
    }
}

/// A running server. Dropping it stops the server.
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<http::State>,
    admin_token: String,
    shutdown: watch::Sender<bool>,
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl ApiServer {
    /// Binds and starts serving in the background.
    pub async fn start(config: Config) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(http::State {
            store: store::Store::new(config.history_limit),
            auth: auth::Authenticator::default(),
            faults: Faults::default(),
            audit: audit::AuditLog::default(),
            rbac: config.rbac,
            bookmark_interval: config.bookmark_interval,
            address: addr.to_string(),
        });
        let admin_token = random_token();
        state.auth.add_token(&admin_token, UserInfo::admin());
        let (shutdown, mut stop) = watch::channel(false);
        let serving = state.clone();
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let state = serving.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| http::handle(state.clone(), req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    _ = stop.changed() => break,
                }
            }
            connections.abort_all();
        });
        Ok(ApiServer {
            addr,
            state,
            admin_token,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn store(&self) -> &store::Store {
        &self.state.store
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn audit(&self) -> Vec<audit::AuditRecord> {
        self.state.audit.records()
    }

    /// The audit records for which `keep` holds (cheaper than [`Self::audit`] on a long log).
    pub fn audit_where(
        &self,
        keep: impl Fn(&audit::AuditRecord) -> bool,
    ) -> Vec<audit::AuditRecord> {
        self.state.audit.records_where(keep)
    }

    /// A token for a cluster administrator (`system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Registers `token` for `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.state.auth.add_token(token, user);
    }

    /// Registers a token for a service account, **bypassing the API**: it works for any name,
    /// whether or not that ServiceAccount exists, never expires and survives the
    /// ServiceAccount's deletion. Handy where a test only needs the identity; to obtain a
    /// token the way `kubectl create token` does (and a real cluster allows), use the
    /// TokenRequest API — [`crate::tokens::request_token`].
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = random_token();
        self.add_token(&token, UserInfo::service_account(namespace, name));
        token
    }

    /// Moves the clock that judges TokenRequest tokens forward by `by`, so a test can see a
    /// token expire without waiting. Only tokens use this clock: object timestamps, audit
    /// records and watch timeouts keep wall time.
    pub fn advance_token_clock(&self, by: Duration) {
        self.state.auth.bound.clock().advance(by);
    }

    /// A kube client authenticated with `token`.
    pub fn client(&self, token: &str) -> kube::Client {
        client_for(&self.url(), Some(token))
    }

    /// A kube client for the administrator.
    pub fn admin_client(&self) -> kube::Client {
        self.client(&self.admin_token)
    }

    /// Writes a kubeconfig for `token` (for kubectl and our binaries).
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        write_kubeconfig(path, &self.url(), token)
    }

    /// Stops accepting connections and closes the open ones.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A kube client for a server URL and bearer token (`None`: anonymous).
///
/// kube's default retry of 429/503/504 is off: tests must see exactly what the server
/// answered, and a client that silently retries for minutes would hide injected faults.
pub fn client_for(url: &str, token: Option<&str>) -> kube::Client {
    let uri: ::http::Uri = url.parse().unwrap_or_default();
    let mut config = kube::Config::new(uri);
    config.auth_info.token = token.map(|t| t.to_string().into());
    config.default_namespace = "default".to_string();
    config.default_retry = false;
    kube::Client::try_from(config).expect("a plain-HTTP kube client needs no TLS setup")
}

/// Writes a kubeconfig pointing at `url` with `token`, namespace `default`.
pub fn write_kubeconfig(path: &Path, url: &str, token: &str) -> std::io::Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "inmem", "cluster": {"server": url}}],
        "users": [{"name": "inmem", "user": {"token": token}}],
        "contexts": [{"name": "inmem", "context": {"cluster": "inmem", "user": "inmem", "namespace": "default"}}],
        "current-context": "inmem",
    });
    let yaml = serde_yaml::to_string(&doc).map_err(std::io::Error::other)?;
    std::fs::write(path, yaml)
}
