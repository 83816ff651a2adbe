//! HTTP client for the sidecar's leader API (`docs/leader-api.md`), on hyper.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::contract::{LeaderStatus, YieldResponse, paths};
use crate::follow::{Events, LeaderSource, SourceError};

/// `User-Agent` unless [`SidecarClient::with_user_agent`] says otherwise.
const USER_AGENT: &str = concat!("leader-client/", env!("CARGO_PKG_VERSION"));
/// Answers larger than this are refused (ours are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;
/// Pooled connections are dropped well before the sidecar closes idle ones (10 s), so that a
/// request never races the server closing its connection.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Talks to one sidecar, e.g. `http://127.0.0.1:4040`.
#[derive(Clone, Debug)]
pub struct SidecarClient {
    base: String,
    user_agent: http::HeaderValue,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl SidecarClient {
    /// Checks that `url` is a plain `http://host:port` base URL.
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid leader URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "invalid leader URL {url:?}: expected http://host:port"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "invalid leader URL {url:?}: give the base URL without a path"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Self {
            base: format!(
                "http://{}",
                uri.authority().map(|a| a.as_str()).unwrap_or_default()
            ),
            user_agent: http::HeaderValue::from_static(USER_AGENT),
            client,
        })
    }

    /// Sends `agent` as `User-Agent` (the sidecar's logs name the caller by it).
    pub fn with_user_agent(mut self, agent: &str) -> Result<Self, String> {
        self.user_agent = http::HeaderValue::from_str(agent)
            .map_err(|e| format!("invalid user agent {agent:?}: {e}"))?;
        Ok(self)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, SourceError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::USER_AGENT, self.user_agent.clone())
            .body(Empty::new())
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        self.client
            .request(request)
            .await
            .map_err(|e| SourceError::Unreachable(error_chain(&e)))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, SourceError> {
        let response = self.send(method, path).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| SourceError::Body(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(SourceError::Status(status.as_u16()));
        }
        serde_json::from_slice(&body).map_err(|e| SourceError::Body(e.to_string()))
    }

    /// `POST /leader/yield`: tells the sidecar our workers have stopped.
    pub async fn yield_leadership(&self) -> Result<YieldResponse, SourceError> {
        self.json(Method::POST, paths::YIELD).await
    }
}

impl LeaderSource for SidecarClient {
    async fn get(&self) -> Result<LeaderStatus, SourceError> {
        self.json(Method::GET, paths::LEADER).await
    }

    async fn watch(&self) -> Result<Events, SourceError> {
        let response = self.send(Method::GET, paths::WATCH).await?;
        if response.status() != StatusCode::OK {
            return Err(SourceError::Status(response.status().as_u16()));
        }
        let events = response
            .into_body()
            .into_data_stream()
            .eventsource()
            .filter_map(|item| async move {
                match item {
                    Ok(event) if event.event == paths::EVENT => Some(
                        serde_json::from_str::<LeaderStatus>(&event.data)
                            .map_err(|e| SourceError::Body(e.to_string())),
                    ),
                    // Other event types are reserved for future use.
                    Ok(_) => None,
                    Err(e) => Some(Err(SourceError::Unreachable(e.to_string()))),
                }
            });
        Ok(events.boxed())
    }
}

/// `error: cause: cause` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
