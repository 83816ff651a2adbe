//! The cluster an end-to-end test runs against: the in-memory API server by default, or the
//! real cluster `KUBECONFIG` points at when `E2E_USE_KUBECONFIG=1` is set (so a developer
//! with a kind cluster can check that our fake behaves like the real thing).
//!
//! Every test gets its own namespace, created at start and deleted on drop, so tests share
//! no state and can run in parallel.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;

use crate::apiserver::{ApiServer, Config};

/// Where a test's requests go.
pub enum Backend {
    InMemory(ApiServer),
    /// A real cluster from `KUBECONFIG`.
    Real {
        kubeconfig: PathBuf,
    },
}

/// A cluster and a fresh namespace for one test.
pub struct TestCluster {
    backend: Backend,
    client: kube::Client,
    namespace: String,
    /// Holds the kubeconfig file written for the in-memory server.
    _kubeconfig_dir: Option<TempDir>,
    kubeconfig: PathBuf,
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether tests should target the real cluster from `KUBECONFIG`.
pub fn use_real_cluster() -> bool {
    std::env::var("E2E_USE_KUBECONFIG").is_ok_and(|v| v == "1")
        && std::env::var_os("KUBECONFIG").is_some()
}

impl TestCluster {
    /// The in-memory server with default settings (or the real cluster, see module docs).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Config::default()).await
    }

    /// Like [`TestCluster::start`], with server settings for the in-memory case.
    pub async fn start_with(config: Config) -> anyhow::Result<Self> {
        let (backend, client, kubeconfig, dir) = if use_real_cluster() {
            let path = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap_or_default());
            let client = kube::Client::try_default().await?;
            (
                Backend::Real {
                    kubeconfig: path.clone(),
                },
                client,
                path,
                None,
            )
        } else {
            let server = ApiServer::start(config).await?;
            let dir = TempDir::new("inmem-kubeconfig")?;
            let path = dir.path().join("kubeconfig");
            server.write_kubeconfig(&path, server.admin_token())?;
            let client = server.admin_client();
            (Backend::InMemory(server), client, path, Some(dir))
        };
        let namespace = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await?;
        Ok(TestCluster {
            backend,
            client,
            namespace,
            _kubeconfig_dir: dir,
            kubeconfig,
        })
    }

    /// An administrator's client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// This test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The in-memory server, or `None` against a real cluster (fault injection and audit
    /// checks are only possible in memory).
    pub fn in_memory(&self) -> Option<&ApiServer> {
        match &self.backend {
            Backend::InMemory(s) => Some(s),
            Backend::Real { .. } => None,
        }
    }

    /// A kubeconfig file for the administrator (for kubectl and spawned binaries).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig for one spawned client. In memory it carries a token of its own (an
    /// administrator named `name`), returned too so that faults can single this client out;
    /// against a real cluster it is the shared kubeconfig and no token.
    pub fn client_kubeconfig(&self, name: &str) -> anyhow::Result<(PathBuf, Option<String>)> {
        let Backend::InMemory(server) = &self.backend else {
            return Ok((self.kubeconfig.clone(), None));
        };
        let dir = self
            .kubeconfig
            .parent()
            .ok_or_else(|| anyhow::anyhow!("kubeconfig has no directory"))?;
        let token = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let user = crate::apiserver::auth::UserInfo {
            name: name.to_owned(),
            ..crate::apiserver::auth::UserInfo::admin()
        };
        server.add_token(&token, user);
        let path = dir.join(format!("kubeconfig-{name}"));
        server.write_kubeconfig(&path, &token)?;
        Ok((path, Some(token)))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // In memory everything goes with the server; a real cluster gets its namespace back.
        if let Backend::Real { .. } = self.backend {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let name = self.namespace.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                });
            }
        }
    }
}
