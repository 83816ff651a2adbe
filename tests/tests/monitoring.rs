//! `deploy/monitoring`: the alerts, the dashboard and what they read.
//!
//! - The alerts are `spec.groups` of `deploy/monitoring/prometheusrule.yaml`, written out as a
//!   plain rules file (one source of truth) for `promtool check rules` and for the unit tests in
//!   `deploy/monitoring/tests/*.yaml` (`promtool test rules`): every alert has a case where it
//!   fires and one where it must never fire.
//! - Each alert has labels, annotations and a runbook heading in docs/operations.md.
//! - Every metric the alerts and the dashboard name is one our binaries export, read from the
//!   `/metrics` of a running sidecar and controller; every dashboard query parses (promtool).
//! - A real Prometheus scrapes two pods (sidecar + controller each) on the in-memory API server,
//!   evaluates the rules, and sees one leader before and after a kill -9 of the leading pod.
//!
//! promtool and prometheus come from Debian's `prometheus` package (2.42, which `.ci/run`
//! installs). Without them these tests print `skipped:`, unless `REQUIRE_EXAMPLE_TOOLCHAINS=1`
//! (CI) makes that a failure. Waits are conditions with upper bounds, never fixed sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kube::api::Api;
use newresource_controller::crd::NewResource;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use testkit::apiserver::faults::{FaultAction, FaultMatch, FaultSpec};
use testkit::cluster::{TempDir, TestCluster};
use testkit::controller::{
    ActiveWindow, WINDOW_STARTED, check_no_overlap, check_writes_inside_windows,
};
use testkit::newresources;
use testkit::pod::{Pod, PodSpec};
use testkit::sidecar::{FAST_TIMINGS, SidecarSpec};
use testkit::web;

/// The `job` label the ServiceMonitor gives the series (the metrics Service's name), which
/// every alert and dashboard query selects.
const JOB: &str = "newresource-controller-metrics";

/// Upper bound of one wait: a hung run fails instead of hanging the suite.
const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn monitoring() -> PathBuf {
    repo().join("deploy/monitoring")
}

/// The PrometheusRule of deploy/monitoring.
fn prometheus_rule() -> anyhow::Result<Value> {
    let path = monitoring().join("prometheusrule.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let rule: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {path:?}"))?;
    ensure!(
        rule["kind"] == "PrometheusRule",
        "{path:?} is no PrometheusRule"
    );
    Ok(rule)
}

/// Its alerting rules, in order.
fn alerts() -> anyhow::Result<Vec<Value>> {
    let rule = prometheus_rule()?;
    let groups = rule["spec"]["groups"]
        .as_array()
        .context("no spec.groups")?;
    Ok(groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect())
}

/// Writes `spec.groups` of the PrometheusRule to `dir/rules.yaml`, the plain rules file
/// Prometheus and promtool read.
fn write_rules_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let rule = prometheus_rule()?;
    let file = json!({ "groups": rule["spec"]["groups"] });
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    Ok(path)
}

/// The unit test files of deploy/monitoring/tests, by file name.
fn rule_test_files() -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(monitoring().join("tests"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .context("no file name")?
                .to_string_lossy()
                .into_owned();
            out.insert(name, std::fs::read_to_string(&path)?);
        }
    }
    Ok(out)
}

/// Runs a tool to completion (blocking: only outside a runtime); its output on failure.
fn run_tool(cmd: &mut std::process::Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() -> anyhow::Result<()> {
    if !testkit::process::tools_present(
        "the alert rule tests",
        &["promtool"],
        " (Debian package prometheus)",
    )? {
        return Ok(());
    }
    let dir = TempDir::new("monitoring-rules")?;
    write_rules_file(dir.path())?;
    let checked = run_tool(
        std::process::Command::new("promtool")
            .current_dir(dir.path())
            .args(["check", "rules", "rules.yaml"]),
    )?;
    let alerts = alerts()?;
    ensure!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "promtool check rules:\n{checked}"
    );

    // The unit tests name `rules.yaml`, the file written above, next to them.
    let files = rule_test_files()?;
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text)?;
    }
    let tested = run_tool(
        std::process::Command::new("promtool")
            .current_dir(dir.path())
            .args(["test", "rules"])
            .args(files.keys()),
    )?;
    ensure!(
        tested.matches("SUCCESS").count() == files.len(),
        "promtool test rules:\n{tested}"
    );

    // Every alert has a case where it fires and one where it must never fire: an
    // alert_rule_test expecting it, and an ALERTS query over the whole case expecting nothing.
    let mut fires = BTreeSet::new();
    let mut never = BTreeSet::new();
    for (name, text) in &files {
        let file: Value = serde_yaml::from_str(text).with_context(|| name.clone())?;
        ensure!(
            file["rule_files"] == json!(["rules.yaml"]),
            "{name}: rule_files must be [rules.yaml]"
        );
        for case in file["tests"].as_array().context("no tests")? {
            for t in case["alert_rule_test"].as_array().into_iter().flatten() {
                if t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                    fires.insert(t["alertname"].as_str().unwrap_or_default().to_owned());
                }
            }
            for t in case["promql_expr_test"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                let empty = t["exp_samples"].as_array().is_some_and(Vec::is_empty);
                let any_firing =
                    !expr.contains("alertstate=") || expr.contains(r#"alertstate="firing""#);
                if let Some(rest) = expr.strip_prefix("max_over_time(ALERTS{alertname=\"")
                    && empty
                    && any_firing
                {
                    never.insert(rest.split('"').next().unwrap_or_default().to_owned());
                }
            }
        }
    }
    for alert in &alerts {
        let name = alert["alert"].as_str().context("a rule without alert")?;
        ensure!(fires.contains(name), "no unit test shows {name} firing");
        ensure!(
            never.contains(name),
            "no unit test shows {name} staying quiet"
        );
    }
    Ok(())
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation but `-` and `_` dropped,
/// spaces to `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading of a Markdown file, duplicates numbered as GitHub does.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let anchor = github_anchor(heading.trim_start_matches('#'));
        let n = seen.entry(anchor.clone()).or_default();
        out.insert(if *n == 0 {
            anchor
        } else {
            format!("{anchor}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn every_alert_has_a_severity_annotations_and_a_runbook_heading() -> anyhow::Result<()> {
    assert_eq!(
        github_anchor(" Runbooks: NewResourceNoLeader"),
        "runbooks-newresourcenoleader"
    );
    let docs = std::fs::read_to_string(repo().join("docs/operations.md"))?;
    let headings = anchors(&docs);
    let alerts = alerts()?;
    let names: Vec<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    assert_eq!(
        names,
        [
            "NewResourceNoLeader",
            "NewResourceLeaderWithoutActiveController",
            "NewResourceLeadershipFlapping",
            "NewResourceApiForbidden",
            "NewResourceLeaseRenewSlow",
            "NewResourceReconcileErrors",
        ]
    );
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap_or_default();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        ensure!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            ensure!(
                alert["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name}: no {key}"
            );
        }
        let runbook = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook
            .strip_prefix("docs/operations.md#")
            .with_context(|| {
                format!("{name}: runbook_url {runbook:?} is not docs/operations.md#…")
            })?;
        ensure!(
            headings.contains(anchor),
            "{name}: docs/operations.md has no heading with the anchor #{anchor}"
        );
        ensure!(
            alert["expr"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("job=\"{JOB}\"")),
            "{name}: its expression does not select job=\"{JOB}\""
        );
    }
    Ok(())
}

/// The Grafana dashboard of deploy/monitoring.
fn dashboard() -> anyhow::Result<Value> {
    let path = monitoring().join("dashboards/newresource-controller.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path:?}"))
}

/// Every panel query of the dashboard, `(panel id, refId, expr)`, with Grafana's variables
/// replaced by values Prometheus accepts.
fn dashboard_queries() -> anyhow::Result<Vec<(i64, String, String)>> {
    let dashboard = dashboard()?;
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels {
        let id = panel["id"].as_i64().context("a panel without id")?;
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "panel {id} has no query");
        ensure!(
            panel["datasource"]["uid"] == "${datasource}",
            "panel {id}: datasource is not ${{datasource}}"
        );
        for t in targets {
            ensure!(
                t["datasource"]["uid"] == "${datasource}",
                "panel {id}: a target's datasource is not ${{datasource}}"
            );
            let expr = t["expr"].as_str().context("a target without expr")?;
            let substituted = expr
                .replace("$__rate_interval", "1m")
                .replace("${namespace}", "newresource-system")
                .replace("$namespace", "newresource-system")
                .replace("${pod}", ".*")
                .replace("$pod", ".*");
            ensure!(
                !substituted.contains('$'),
                "panel {id}: an unknown variable in {expr}"
            );
            let ref_id = t["refId"].as_str().unwrap_or_default().to_owned();
            out.push((id, ref_id, substituted));
        }
    }
    Ok(out)
}

#[test]
fn dashboard_queries_parse_and_use_only_its_variables() -> anyhow::Result<()> {
    let dashboard = dashboard()?;
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .context("no templating")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "pod"]);
    let queries = dashboard_queries()?;
    ensure!(queries.len() >= 10, "{} queries", queries.len());
    if !testkit::process::tools_present(
        "the dashboard query check",
        &["promtool"],
        " (Debian package prometheus)",
    )? {
        return Ok(());
    }
    // Each query as a recording rule: `promtool check rules` parses them all.
    let rules: Vec<Value> = queries
        .iter()
        .map(|(id, ref_id, expr)| json!({ "record": format!("dashboard:panel_{id}_{ref_id}"), "expr": expr }))
        .collect();
    let dir = TempDir::new("monitoring-dashboard")?;
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(&json!({ "groups": [{ "name": "dashboard", "rules": rules }] }))?,
    )?;
    let out = run_tool(
        std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file),
    )?;
    ensure!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "promtool check rules:\n{out}"
    );
    Ok(())
}

/// Metric names in a PromQL expression, from its syntax tree.
fn metric_names(expr: &str) -> anyhow::Result<BTreeSet<String>> {
    struct Names(BTreeSet<String>, Vec<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
            let selector = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                match &vs.name {
                    Some(name) => {
                        self.0.insert(name.clone());
                    }
                    None => self.1.push(vs.to_string()),
                }
            }
            Ok(true)
        }
    }
    let ast = promql_parser::parser::parse(expr).map_err(|e| anyhow::anyhow!("{expr}: {e}"))?;
    let mut names = Names(BTreeSet::new(), Vec::new());
    let _ = walk_expr(&mut names, &ast);
    ensure!(
        names.1.is_empty(),
        "selectors without a metric name in {expr}: {:?}",
        names.1
    );
    ensure!(!names.0.is_empty(), "no metric in {expr}");
    Ok(names.0)
}

/// The series names a `/metrics` text exports, from its `# TYPE` lines: counters as
/// `<name>_total`, histograms as `_bucket`, `_sum` and `_count`, the rest by their name.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" if name.ends_with("_total") => {
                out.insert(name.to_owned());
            }
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// Starts pods whose sidecars compete for `lease` and whose controllers watch only this test's
/// namespace; each process has its own API user (`<pod>-sidecar`, `<pod>-controller`).
async fn start_pods(
    cluster: &TestCluster,
    lease: &str,
    names: &[&str],
) -> anyhow::Result<Vec<Pod>> {
    let mut pods = Vec::new();
    for name in names {
        let (sidecar_kc, _) = cluster.client_kubeconfig(&format!("{name}-sidecar"))?;
        let (controller_kc, _) = cluster.client_kubeconfig(&format!("{name}-controller"))?;
        pods.push(
            Pod::start(PodSpec {
                name: (*name).to_owned(),
                sidecar: SidecarSpec::new(&sidecar_kc, cluster.namespace(), lease, name)
                    .args(FAST_TIMINGS),
                controller_kubeconfig: controller_kc,
                controller_args: vec!["--namespace".into(), cluster.namespace().into()],
            })
            .await?,
        );
    }
    Ok(pods)
}

/// Waits until one pod's controller has logged an active window; returns its index.
async fn first_active(pods: &[Pod]) -> anyhow::Result<usize> {
    poll("a controller to become active", || async {
        Ok(pods
            .iter()
            .position(|p| !p.controller.logs_with(WINDOW_STARTED).is_empty()))
    })
    .await
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after [`WAIT`] with the last
/// error it returned.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::from("no answer yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("waited {WAIT:?} for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_metrics_the_binaries_export() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let Some(server) = cluster.in_memory() else {
        eprintln!("in memory only: the error families need injected API errors");
        return Ok(());
    };
    newresources::install_crd(&cluster.client()).await?;
    let pods = start_pods(&cluster, "metrics", &["pod-a"]).await?;
    first_active(&pods).await?;
    // One reconcile, so that the labelled families have series. A family without series has
    // no `# TYPE` line either, so the error families need errors: one failed renew (500) for
    // the sidecar, one refused status write (403) for the controller, which retries.
    let fail_once = |user: &str, verb: &str, resource: &str, code: u16| FaultSpec {
        matcher: FaultMatch {
            user: Some(user.to_owned()),
            verb: Some(verb.to_owned()),
            resource: Some(resource.to_owned()),
            ..FaultMatch::default()
        },
        action: FaultAction::Error {
            code,
            retry_after: None,
        },
        times: Some(1),
    };
    server
        .faults()
        .add(fail_once("pod-a-sidecar", "update", "leases", 500));
    server
        .faults()
        .add(fail_once("pod-a-controller", "update", "newresources", 403));
    let api: Api<NewResource> = Api::namespaced(cluster.client(), cluster.namespace());
    let names = newresources::names("one", 0..1);
    newresources::create(&api, &names).await?;
    newresources::wait_ready(&api, &names, WAIT).await?;

    let (sidecar, controller) = poll("the error families in /metrics", || async {
        let sidecar = pods[0].sidecar.metrics().await?;
        let controller = pods[0].controller.metrics_text().await?;
        let all = sidecar.contains("leader_sidecar_api_errors_total{")
            && controller.contains("controller_reconcile_errors_total{")
            && controller.contains("controller_api_errors_total{");
        Ok(all.then_some((sidecar, controller)))
    })
    .await?;
    let mut exported = exported_names(&sidecar);
    exported.extend(exported_names(&controller));
    for family in [
        "leader_election_master_status",
        "leader_sidecar_renew_deadline_seconds",
        "leader_sidecar_transitions_total",
        "leader_sidecar_renew_duration_seconds_bucket",
        "controller_leader",
        "controller_reconcile_total",
        "controller_reconcile_duration_seconds_bucket",
        "controller_reconcile_errors_total",
        "controller_api_errors_total",
        "leader_sidecar_api_errors_total",
    ] {
        ensure!(
            exported.contains(family),
            "{family} not exported: {exported:?}"
        );
    }

    let mut used = BTreeSet::new();
    for alert in alerts()? {
        let expr = alert["expr"].as_str().context("an alert without expr")?;
        let names = metric_names(expr)?;
        let unknown: Vec<&String> = names.difference(&exported).collect();
        ensure!(
            unknown.is_empty(),
            "alert {}: {unknown:?} are not exported by the binaries ({exported:?})",
            alert["alert"]
        );
        used.extend(names);
    }
    for (id, ref_id, expr) in dashboard_queries()? {
        let names = metric_names(&expr)?;
        let unknown: Vec<&String> = names.difference(&exported).collect();
        ensure!(
            unknown.is_empty(),
            "dashboard panel {id} query {ref_id}: {unknown:?} are not exported by the binaries \
             ({exported:?})"
        );
        used.extend(names);
    }
    // The dashboard and alerts cover what the issue asks of them.
    for family in [
        "leader_election_master_status",
        "controller_leader",
        "leader_sidecar_transitions_total",
        "leader_sidecar_renew_duration_seconds_bucket",
        "leader_sidecar_renew_deadline_seconds",
        "leader_sidecar_http_requests_total",
        "controller_reconcile_total",
        "controller_reconcile_errors_total",
        "controller_reconcile_duration_seconds_bucket",
        "leader_sidecar_api_errors_total",
        "controller_api_errors_total",
    ] {
        ensure!(
            used.contains(family),
            "neither alerts nor dashboard use {family}"
        );
    }
    Ok(())
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    _child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` with `config` on a free loopback port (bound to port 0 and closed
    /// first, so another process may take it in between: then it tries another).
    async fn start(dir: &Path, config: &Path) -> anyhow::Result<Self> {
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let mut child = tokio::process::Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .kill_on_drop(true)
                .spawn()
                .context("cannot start prometheus")?;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if let Some(status) = child.try_wait()? {
                    failures.push(format!(
                        "exited ({status}):\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    ));
                    break;
                }
                if http_get(addr, "/-/ready")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    return Ok(Self {
                        _child: child,
                        addr,
                        log,
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "prometheus not ready on {addr} after {WAIT:?}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        bail!("prometheus did not start: {failures:#?}")
    }

    /// `GET path` answered 200 with `{"status":"success"}`: its `data`.
    async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let reply = http_get(self.addr, path).await?;
        let body: Value = reply.json()?;
        ensure!(
            reply.status == 200 && body["status"] == "success",
            "GET {path}: {} {body}",
            reply.status
        );
        Ok(body["data"].clone())
    }

    /// The instant vector of `query`: each result's labels and value.
    async fn query(&self, query: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let data = self.api(&format!("/api/v1/query?query={encoded}")).await?;
        ensure!(data["resultType"] == "vector", "{query}: {data}");
        let mut out = Vec::new();
        for r in data["result"].as_array().context("no result")? {
            let labels = serde_json::from_value(r["metric"].clone())?;
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{query}: bad value in {r}"))?;
            out.push((labels, value));
        }
        Ok(out)
    }

    /// Names of the alerts in state `firing`.
    async fn firing(&self) -> anyhow::Result<Vec<String>> {
        let data = self.api("/api/v1/alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .context("no alerts")?
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect())
    }
}

/// `GET path` over HTTP/1.0, so that Prometheus answers without chunked encoding.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<web::Reply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    web::parse(&raw)
}

/// The pods Prometheus sees leading (`leader_election_master_status == 1`).
async fn leaders(prom: &Prometheus) -> anyhow::Result<Vec<String>> {
    Ok(prom
        .query(&format!(
            "leader_election_master_status{{job=\"{JOB}\"}} == 1"
        ))
        .await?
        .into_iter()
        .map(|(labels, _)| labels.get("pod").cloned().unwrap_or_default())
        .collect())
}

/// Successful reconciles of `pod` as Prometheus last scraped them.
async fn reconciles(prom: &Prometheus, pod: &str) -> anyhow::Result<f64> {
    Ok(prom
        .query(&format!(
            "sum(controller_reconcile_total{{job=\"{JOB}\",pod=\"{pod}\",result=\"success\"}})"
        ))
        .await?
        .first()
        .map_or(0.0, |(_, v)| *v))
}

#[tokio::test]
async fn a_real_prometheus_sees_one_leader_through_a_kill_9_failover() -> anyhow::Result<()> {
    if !testkit::process::tools_present(
        "the Prometheus end-to-end test",
        &["prometheus"],
        " (Debian package prometheus)",
    )? {
        return Ok(());
    }
    let cluster = TestCluster::start().await?;
    newresources::install_crd(&cluster.client()).await?;
    let pods = start_pods(&cluster, "prom", &["pod-a", "pod-b"]).await?;

    // Both pods' sidecar and controller metrics ports, labelled as the Prometheus Operator
    // labels the ServiceMonitor's targets; the rules are the PrometheusRule's.
    let dir = TempDir::new("monitoring-prometheus")?;
    write_rules_file(dir.path())?;
    let static_configs: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({
                "targets": [p.sidecar.admin.to_string(), p.controller.metrics.to_string()],
                "labels": { "namespace": cluster.namespace(), "pod": p.name },
            })
        })
        .collect();
    let config = json!({
        "global": { "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s" },
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{ "job_name": JOB, "static_configs": static_configs }],
    });
    let config_path = dir.path().join("prometheus.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;
    let prom = Prometheus::start(dir.path(), &config_path).await?;
    let context = || {
        format!(
            "prometheus log:\n{}",
            std::fs::read_to_string(&prom.log).unwrap_or_default()
        )
    };

    // Every target is up and every alerting rule evaluates without error on the real series
    // (the joins on namespace and pod match one to one).
    poll("all four targets up", || async {
        let up = prom.query(&format!("up{{job=\"{JOB}\"}} == 1")).await?;
        Ok((up.len() == 4).then_some(()))
    })
    .await
    .with_context(context)?;
    let leader = first_active(&pods).await?;
    let (leader_name, standby_name) = (pods[leader].name.clone(), pods[1 - leader].name.clone());
    poll("every rule evaluated with health ok", || async {
        let data = prom.api("/api/v1/rules").await?;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .context("no groups")?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        ensure!(rules.len() == 6, "{} rules loaded", rules.len());
        if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
            bail!("a rule fails: {bad}");
        }
        Ok(rules.iter().all(|r| r["health"] == "ok").then_some(()))
    })
    .await
    .with_context(context)?;

    // Before: exactly one pod leads, the one whose controller is active, and the alerts'
    // conditions are all empty once Prometheus has scraped that.
    poll("Prometheus to see the kit's leader alone", || async {
        Ok((leaders(&prom).await? == [leader_name.clone()]).then_some(()))
    })
    .await?;
    let api: Api<NewResource> = Api::namespaced(cluster.client(), cluster.namespace());
    let before = newresources::names("before", 0..3);
    newresources::create(&api, &before).await?;
    newresources::wait_ready(&api, &before, WAIT).await?;
    poll("the leader's reconciles in Prometheus", || async {
        Ok((reconciles(&prom, &leader_name).await? >= 3.0).then_some(()))
    })
    .await?;
    let alerts = alerts()?;
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap_or_default();
        let expr = alert["expr"].as_str().unwrap_or_default();
        poll(&format!("{name}'s condition to be empty"), || async {
            Ok(prom.query(expr).await?.is_empty().then_some(()))
        })
        .await?;
    }
    let standby_before = reconciles(&prom, &standby_name).await?;
    ensure!(
        standby_before == 0.0,
        "the standby reconciled: {standby_before}"
    );

    // kill -9 of both processes of the leading pod. Its controller's window ends with it.
    pods[leader].sidecar.signal(libc::SIGKILL)?;
    pods[leader].controller.signal(libc::SIGKILL)?;
    let killed_at = jiff::Timestamp::now();
    pods[1 - leader]
        .controller
        .wait_log(WINDOW_STARTED, WAIT)
        .await?;
    let after = newresources::names("after", 0..3);
    newresources::create(&api, &after).await?;
    newresources::wait_ready(&api, &after, WAIT).await?;

    // After: exactly one pod leads again, the other one, and its reconciles grow.
    poll("Prometheus to see the new leader alone", || async {
        Ok((leaders(&prom).await? == [standby_name.clone()]).then_some(()))
    })
    .await?;
    poll("the new leader's reconciles in Prometheus", || async {
        Ok((reconciles(&prom, &standby_name).await? >= 3.0).then_some(()))
    })
    .await?;
    // Every alert's condition is empty again on the new leader's series (NewResourceNoLeader
    // and NewResourceLeaderWithoutActiveController can be true for moments of a failover).
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap_or_default();
        let expr = alert["expr"].as_str().unwrap_or_default();
        poll(
            &format!("{name}'s condition to be empty after the failover"),
            || async { Ok(prom.query(expr).await?.is_empty().then_some(())) },
        )
        .await?;
    }
    let firing = prom.firing().await?;
    ensure!(firing.is_empty(), "alerts firing: {firing:?}");
    // What Prometheus saw, for the log (pending alerts are allowed: every `for` is a minute or
    // more, longer than this test).
    let pending: Vec<String> = prom
        .query("ALERTS{alertstate=\"pending\"}")
        .await?
        .into_iter()
        .filter_map(|(l, _)| l.get("alertname").cloned())
        .collect();
    eprintln!(
        "prometheus: leader {leader_name} before the kill -9, {standby_name} after with {} \
         successful reconciles; pending alerts now: {pending:?}",
        reconciles(&prom, &standby_name).await?
    );

    // Safety and liveness as the kit judges them: no overlapping active windows, every status
    // write inside its writer's window, and the new window under a higher term.
    let mut windows: Vec<(String, Vec<ActiveWindow>)> = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let mut w = pod.controller.windows()?;
        if i == leader
            && let Some(last) = w.last_mut().filter(|w| w.end.is_none())
        {
            last.end = Some(killed_at);
        }
        windows.push((format!("{}-controller", pod.name), w));
    }
    let named: Vec<(&str, Vec<ActiveWindow>)> = windows
        .iter()
        .map(|(n, w)| (n.as_str(), w.clone()))
        .collect();
    check_no_overlap(&named)?;
    ensure!(
        named[1 - leader].1.len() == 1 && named[leader].1.len() == 1,
        "{named:?}"
    );
    ensure!(
        named[1 - leader].1[0].term > named[leader].1[0].term,
        "the new window has a higher term: {named:?}"
    );
    if let Some(server) = cluster.in_memory() {
        let n = check_writes_inside_windows(&server.audit(), &named)?;
        ensure!(n >= 6, "{n} status writes");
    }
    Ok(())
}
