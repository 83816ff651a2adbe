//! Fault injection of the in-memory API server, through the library API and the `/_inmem/`
//! control endpoint. In-memory only by nature.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use testkit::apiserver::{ApiServer, Config, FaultAction, FaultMatch, FaultSpec};
use testkit::fixtures::lease;
use testkit::outcome::code_of;

#[tokio::test]
async fn error_rules_answer_with_status_and_retry_after_then_expire() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let leases: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    server.faults().add(FaultSpec {
        matcher: FaultMatch {
            verb: Some("list".into()),
            resource: Some("leases".into()),
            ..FaultMatch::default()
        },
        action: FaultAction::Error {
            code: 429,
            retry_after: Some(3),
        },
        times: Some(2),
    });
    // The raw response carries Retry-After, as the real server's priority-and-fairness does.
    let req = http::Request::get("/apis/coordination.k8s.io/v1/namespaces/default/leases")
        .body(Vec::new())?;
    let resp = server.admin_client().send(req.map(Into::into)).await?;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("3")
    );
    // One use left, then the rule is gone; other verbs were never affected.
    assert_eq!(
        code_of(
            leases
                .create(&PostParams::default(), &lease("a", "x"))
                .await
        ),
        200
    );
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 429);
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 200);
    assert!(server.faults().list().is_empty());
    Ok(())
}

#[tokio::test]
async fn latency_rule_delays_matching_requests() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let leases: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    server.faults().add(FaultSpec {
        matcher: FaultMatch::default(),
        action: FaultAction::LatencyMs(250),
        times: Some(1),
    });
    let started = Instant::now();
    leases.list(&ListParams::default()).await?;
    // A lower bound only: the injected delay must have been applied.
    assert!(started.elapsed() >= Duration::from_millis(250));
    Ok(())
}

#[tokio::test]
async fn partition_cuts_off_one_client_while_others_are_served() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let cut_token = server.service_account_token("default", "cut-off");
    let cut: Api<Lease> = Api::namespaced(server.client(&cut_token), "default");
    let healthy: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    let created = healthy
        .create(&PostParams::default(), &lease("p", "x"))
        .await?;

    // The cut-off client has a watch open before the partition.
    let watch = cut
        .watch(
            &WatchParams::default().timeout(60),
            created
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default(),
        )
        .await?;
    let mut watch = Box::pin(watch);

    // Another pod of the same service account, with its own token, stays connected.
    let sibling_token = server.service_account_token("default", "cut-off");
    let sibling: Api<Lease> = Api::namespaced(server.client(&sibling_token), "default");
    let rule = server.faults().partition_token(&cut_token);

    // Its requests hang...
    let pending = tokio::spawn({
        let cut = cut.clone();
        async move { cut.get("p").await }
    });
    server.faults().wait_hung(2).await; // the open watch and the new request
    // ...while the other client is served, and its write does not reach the cut-off watch.
    healthy
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "y"}})),
        )
        .await?;
    assert!(!pending.is_finished());
    assert_eq!(
        sibling
            .get("p")
            .await?
            .spec
            .and_then(|s| s.holder_identity)
            .as_deref(),
        Some("y")
    );

    // Healing closes the silent watch without delivering what happened meanwhile, and the
    // hung request is lost with its connection.
    assert!(server.faults().remove(rule));
    assert!(watch.try_next().await.ok().flatten().is_none());
    assert!(pending.await?.is_err());
    // Afterwards the client is served again.
    assert_eq!(
        cut.get("p")
            .await?
            .spec
            .and_then(|s| s.holder_identity)
            .as_deref(),
        Some("y")
    );
    Ok(())
}

#[tokio::test]
async fn drop_watches_ends_every_open_watch() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let leases: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    let created = leases
        .create(&PostParams::default(), &lease("d", "x"))
        .await?;
    let stream = leases
        .watch(
            &WatchParams::default().timeout(60),
            created
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default(),
        )
        .await?;
    let mut stream = Box::pin(stream);
    leases
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "z"}})),
        )
        .await?;
    assert!(matches!(
        stream.try_next().await?,
        Some(WatchEvent::Modified(_))
    ));
    server.faults().drop_watches();
    assert!(stream.try_next().await.ok().flatten().is_none());
    Ok(())
}

#[tokio::test]
async fn control_endpoint_adds_lists_and_removes_rules() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let client = server.admin_client();
    let add = http::Request::post("/_inmem/faults")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({
            "match": {"user_agent": "no-such-agent"},
            "action": {"error": {"code": 503}}
        }))?)?;
    let added: serde_json::Value = client.request(add).await?;
    let id = added["id"].as_u64().expect("rule id");
    let list: serde_json::Value = client
        .request(http::Request::get("/_inmem/faults").body(Vec::new())?)
        .await?;
    assert_eq!(list[0]["id"].as_u64(), Some(id));
    assert_eq!(list[0]["action"], json!({"error": {"code": 503}}));

    let bad = http::Request::post("/_inmem/faults")
        .header("content-type", "application/json")
        .body(b"{\"action\": \"explode\"}".to_vec())?;
    assert_eq!(code_of(client.request::<serde_json::Value>(bad).await), 400);

    let removed: serde_json::Value = client
        .request(http::Request::delete(format!("/_inmem/faults/{id}")).body(Vec::new())?)
        .await?;
    assert_eq!(removed["removed"].as_u64(), Some(id));
    assert!(server.faults().list().is_empty());
    Ok(())
}

#[tokio::test]
async fn audit_log_records_who_did_what() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let token = server.service_account_token("default", "writer");
    let leases: Api<Lease> = Api::namespaced(server.client(&token), "default");
    leases
        .create(&PostParams::default(), &lease("audited", "x"))
        .await?;
    let _ = leases
        .create(&PostParams::default(), &lease("audited", "x"))
        .await;
    let records: Vec<_> = server
        .audit()
        .into_iter()
        .filter(|r| r.user == "system:serviceaccount:default:writer")
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.verb.as_str(), r.resource.as_str(), r.code))
            .collect::<Vec<_>>(),
        vec![("create", "leases", 201), ("create", "leases", 409)]
    );
    Ok(())
}

#[tokio::test]
async fn user_agent_rule_fails_only_that_client() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    server.faults().add(FaultSpec {
        matcher: FaultMatch {
            user_agent: Some("flaky-agent".into()),
            ..FaultMatch::default()
        },
        action: FaultAction::Error {
            code: 503,
            retry_after: None,
        },
        times: None,
    });
    let client = server.admin_client();
    let get = |agent: &str| {
        http::Request::get("/apis/coordination.k8s.io/v1/namespaces/default/leases")
            .header("user-agent", agent)
            .body(Vec::new())
    };
    let flaky = client.send(get("flaky-agent/1.0")?.map(Into::into)).await?;
    assert_eq!(flaky.status().as_u16(), 503);
    let fine = client
        .send(get("steady-agent/1.0")?.map(Into::into))
        .await?;
    assert_eq!(fine.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn stall_rule_holds_requests_and_serves_them_all_when_removed() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let leases: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    let rule = server.faults().add(FaultSpec {
        matcher: FaultMatch {
            resource: Some("leases".into()),
            ..FaultMatch::default()
        },
        action: FaultAction::Stall,
        times: None,
    });
    let pp = PostParams::default();
    let writes: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|holder| {
            let leases = leases.clone();
            let pp = pp.clone();
            tokio::spawn(async move { leases.create(&pp, &lease("shared", holder)).await })
        })
        .collect();
    // Both creates are held, and the server says whose they are.
    server.faults().wait_hung(2).await;
    assert_eq!(server.faults().held_users(), ["admin", "admin"]);
    server.faults().remove(rule);
    // Released together: one create wins, the other gets AlreadyExists.
    let mut codes = Vec::new();
    for w in writes {
        codes.push(code_of(w.await?));
    }
    codes.sort_unstable();
    assert_eq!(codes, [200, 409]);
    assert!(server.faults().held_users().is_empty());
    Ok(())
}

#[tokio::test]
async fn hold_watch_rule_keeps_one_clients_watch_open_and_silent_then_delivers_in_order()
-> anyhow::Result<()> {
    use futures::FutureExt;
    let server = ApiServer::start(Config::default()).await?;
    let held_token = server.service_account_token("default", "black-holed");
    let held: Api<Lease> = Api::namespaced(server.client(&held_token), "default");
    let admin: Api<Lease> = Api::namespaced(server.admin_client(), "default");
    let created = admin
        .create(&PostParams::default(), &lease("h", "x"))
        .await?;
    let rv = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    // A 1 s watch timeout: a held stream must not end at it.
    let mut stream = Box::pin(held.watch(&WatchParams::default().timeout(1), &rv).await?);
    let mut other = Box::pin(
        admin
            .watch(&WatchParams::default().timeout(60), &rv)
            .await?,
    );
    let rule = server.faults().hold_watches(&held_token);

    for holder in ["y", "z"] {
        admin
            .patch(
                "h",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": holder}})),
            )
            .await?;
        // Everybody else's watch gets the event...
        assert!(matches!(
            other.try_next().await?,
            Some(WatchEvent::Modified(_))
        ));
    }
    // ...while the held stream's server side has taken both and sent nothing.
    server.faults().wait_held_events(2).await;
    assert!(stream.try_next().now_or_never().is_none());
    // The client's other requests are served meanwhile.
    assert_eq!(
        held.get("h").await?.spec.and_then(|s| s.holder_identity),
        Some("z".into())
    );
    // Removing the rule delivers what was held, in order, on the same stream (which outlived
    // its 1 s timeout while held: the rule was added before any timeout could pass).
    assert!(server.faults().remove(rule));
    for holder in ["y", "z"] {
        match stream.try_next().await? {
            Some(WatchEvent::Modified(l)) => assert_eq!(
                l.spec.and_then(|s| s.holder_identity).as_deref(),
                Some(holder)
            ),
            e => anyhow::bail!("expected a held MODIFIED event, got {e:?}"),
        }
    }
    Ok(())
}
