//! A client-go elector (`testkit::clientgo`, which writes the Lease the way client-go's
//! `tools/leaderelection` does) competes with the pods for the same Lease. Its leading periods
//! are windows too, judged with the controllers' for overlap and growing terms.

use std::time::Duration;

use crate::clientgo::{ClientGoElector, ClientGoTimings};
use crate::world::{WAIT, World};

use super::{LEASE, RETRY, one_leader_all_agree, wait_renews, window_closed};

fn timings() -> ClientGoTimings {
    ClientGoTimings {
        lease_duration: LEASE,
        renew_deadline: Duration::from_secs(2),
        retry_period: RETRY,
    }
}

pub async fn client_go(w: &mut World) -> anyhow::Result<Vec<String>> {
    let lease = w.lease_name();
    let client = w.cluster.client();
    let ns = w.cluster.namespace().to_owned();
    let mut foreign = Vec::new();

    // 1. Our pods lead; a client-go elector arrives and waits while the leader renews.
    let first = w.window_opens(&[]).await?;
    w.create("ours", 5).await?;
    w.all_ready().await?;
    let go = ClientGoElector::spawn(client.clone(), &ns, &lease, "client-go-1", timings(), false);
    wait_renews(w, first, 12).await?;
    anyhow::ensure!(
        !go.is_leading(),
        "client-go took a Lease our leader renewed"
    );

    // 2. Our leading sidecar dies with the other pod's sidecar frozen: only client-go can
    //    take over, and it does once the Lease expires.
    let other = 1 - first;
    w.pods[other].sidecar.signal(libc::SIGSTOP)?;
    w.pods[first].sidecar.signal(libc::SIGKILL)?;
    w.mark_heal("kill -9 of our leading sidecar");
    go.wait_leading(WAIT).await?;
    w.pods[other].sidecar.signal(libc::SIGCONT)?;
    w.restart_sidecar(first).await?;
    for i in [first, other] {
        w.pods[i]
            .sidecar
            .wait_status(WAIT, |s| {
                !s.is_leader && s.holder.as_deref() == Some("client-go-1")
            })
            .await?;
    }
    window_closed(w, first, "after client-go took over").await?;
    window_closed(w, other, "after client-go took over").await?;

    // 3. client-go crashes without releasing: one of our pods takes over after the lease.
    let counts = w.window_counts();
    foreign.extend(go.crash().await);
    w.mark_heal("client-go crashed");
    let next = w.window_opens_after(&counts, &[]).await?;
    one_leader_all_agree(w).await?;
    w.create("after-crash", 5).await?;
    w.all_ready().await?;

    // 4. A second client-go elector that releases on stop: it waits while we lead, takes over
    //    as soon as our leader's sidecar gets SIGTERM (it releases the Lease the way client-go
    //    does), and hands back on its own release.
    let go = ClientGoElector::spawn(client, &ns, &lease, "client-go-2", timings(), true);
    wait_renews(w, next, 12).await?;
    anyhow::ensure!(
        !go.is_leading(),
        "client-go took a Lease our leader renewed"
    );
    let survivor = 1 - next;
    w.pods[survivor].sidecar.signal(libc::SIGSTOP)?;
    w.pods[next].sidecar.signal(libc::SIGTERM)?;
    w.mark_heal("SIGTERM to our leading sidecar");
    go.wait_leading(WAIT).await?;
    w.pods[survivor].sidecar.signal(libc::SIGCONT)?;
    w.restart_sidecar(next).await?;
    let counts = w.window_counts();
    foreign.extend(go.stop().await);
    w.mark_heal("client-go released");
    let last = w.window_opens_after(&counts, &[]).await?;
    one_leader_all_agree(w).await?;
    w.create("after-release", 5).await?;
    w.all_ready().await?;

    let tenures = foreign.len();
    w.foreign_windows("client-go", foreign);
    Ok(vec![format!(
        "{tenures} client-go tenures between ours; {} leads at the end",
        w.pods[last].name
    )])
}
