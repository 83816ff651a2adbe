//! Service-account tokens obtained the way `kubectl create token` obtains them: the
//! TokenRequest API (`POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`). The same
//! call works against the in-memory API server and a real cluster, so end-to-end tests can run
//! the sidecar and controller with the token of the ServiceAccount the manifests bind.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

/// Requests a token for `namespace/service_account`, valid for `expiration` (at least ten
/// minutes, in whole seconds; the server may shorten it) and for the API server's own audience.
///
/// Fails with a message naming the cause when the ServiceAccount does not exist (404) or the
/// caller may not `create` `serviceaccounts/token` there (403).
pub async fn request_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    expiration: Duration,
) -> anyhow::Result<String> {
    if expiration.subsec_nanos() != 0 {
        bail!("token expiration {expiration:?} cannot be expressed in whole seconds");
    }
    let seconds = i64::try_from(expiration.as_secs())
        .with_context(|| format!("token expiration {expiration:?} is too long"))?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // Empty: the API server's audiences, so the token authenticates to it.
            audiences: Vec::new(),
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let response = accounts
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| explain(e, namespace, service_account))?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow!("the TokenRequest for serviceaccount {namespace}/{service_account} came back without a token")
        })
}

fn explain(error: kube::Error, namespace: &str, service_account: &str) -> anyhow::Error {
    let target = format!("serviceaccount {namespace}/{service_account}");
    match error {
        kube::Error::Api(status) if status.code == 404 => anyhow!(
            "cannot request a token for {target}: it does not exist (404: {})",
            status.message
        ),
        kube::Error::Api(status) if status.code == 403 => anyhow!(
            "cannot request a token for {target}: forbidden — the caller needs RBAC verb \"create\" on resource \"serviceaccounts/token\" in namespace {namespace} (403: {})",
            status.message
        ),
        kube::Error::Api(status) => anyhow!(
            "cannot request a token for {target}: {} {} ({})",
            status.code,
            status.reason,
            status.message
        ),
        other => anyhow::Error::new(other).context(format!("cannot request a token for {target}")),
    }
}
