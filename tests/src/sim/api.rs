//! The model API server: one Lease in a linearizable compare-and-swap store, with the
//! history of its changes for watches that resume from a resourceVersion.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;

use super::clock::Nanos;

/// What a watch (or the list that starts it) tells a sidecar: `lease_api::Watched`, cloneable.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// A watch event delivered the Lease.
    Applied(Box<Lease>),
    /// The list that starts a watch returned the Lease (`Watched::Listed` in the sidecar).
    Listed(Box<Lease>),
    /// The Lease does not exist as of this resourceVersion.
    Absent(Option<String>),
}

impl WatchItem {
    pub fn rv(&self) -> Option<u64> {
        match self {
            WatchItem::Applied(l) | WatchItem::Listed(l) => {
                l.metadata.resource_version.as_deref()?.parse().ok()
            }
            WatchItem::Absent(rv) => rv.as_deref()?.parse().ok(),
        }
    }
}

/// A request to the API server.
#[derive(Debug)]
pub enum Op {
    Get,
    Create(Box<Lease>),
    Replace(Box<Lease>),
    /// Start a watch: list first when `from` is `None`, else resume after `from`.
    Watch {
        from: Option<u64>,
    },
}

/// The API server's answer.
#[derive(Debug)]
pub enum Reply {
    Found(Box<Lease>),
    NotFound,
    Stored(Box<Lease>),
    /// 409: the resourceVersion precondition failed, or the Lease exists (create).
    Conflict,
    /// 404 on replace.
    Gone,
    /// A 5xx, a transport error or a timeout: no definite answer.
    Error,
    WatchStarted {
        conn: u64,
        list: Option<WatchItem>,
    },
}

/// One open watch connection of a sidecar.
#[derive(Debug)]
pub struct WatchConn {
    pub node: usize,
    pub inc: u32,
    /// Events held while the connection is stalled (or its node partitioned).
    pub held: Vec<WatchItem>,
    /// Events are delivered in order: none before this.
    pub last_delivery: Nanos,
}

#[derive(Debug, Default)]
pub struct ApiServer {
    pub lease: Option<Lease>,
    /// The last resourceVersion handed out (every write and delete takes a new one).
    pub rv: u64,
    uid: u64,
    history: Vec<(u64, WatchItem)>,
    /// Open watches by connection id (ordered, so that fan-out order is deterministic).
    pub watches: BTreeMap<u64, WatchConn>,
}

impl ApiServer {
    pub fn new(initial: Option<Lease>) -> Self {
        let mut s = Self::default();
        if let Some(l) = initial {
            s.commit(l);
        }
        s
    }

    fn commit(&mut self, mut lease: Lease) -> (Lease, WatchItem) {
        self.rv += 1;
        lease.metadata.resource_version = Some(self.rv.to_string());
        if lease.metadata.uid.is_none() {
            self.uid += 1;
            lease.metadata.uid = Some(format!("uid-{}", self.uid));
        }
        self.lease = Some(lease.clone());
        let item = WatchItem::Applied(Box::new(lease.clone()));
        self.history.push((self.rv, item.clone()));
        (lease, item)
    }

    /// Applies a Lease request; returns the answer and the change to fan out to watches.
    /// `Op::Watch` is answered by the caller (it needs a connection).
    pub fn apply(&mut self, op: Op) -> (Reply, Option<WatchItem>) {
        match op {
            Op::Get => match &self.lease {
                Some(l) => (Reply::Found(Box::new(l.clone())), None),
                None => (Reply::NotFound, None),
            },
            Op::Create(mut lease) => {
                if self.lease.is_some() {
                    return (Reply::Conflict, None);
                }
                lease.metadata.uid = None;
                let (stored, item) = self.commit(*lease);
                (Reply::Stored(Box::new(stored)), Some(item))
            }
            Op::Replace(lease) => {
                let Some(current) = &self.lease else {
                    return (Reply::Gone, None);
                };
                // No resourceVersion: an unconditional update (the elector always sends one).
                if lease.metadata.resource_version.is_some()
                    && lease.metadata.resource_version != current.metadata.resource_version
                {
                    return (Reply::Conflict, None);
                }
                let mut lease = *lease;
                lease.metadata.uid = current.metadata.uid.clone();
                let (stored, item) = self.commit(lease);
                (Reply::Stored(Box::new(stored)), Some(item))
            }
            Op::Watch { .. } => (Reply::Error, None),
        }
    }

    /// What a list says: the Lease, or its absence as of the current resourceVersion.
    pub fn list(&self) -> WatchItem {
        match &self.lease {
            Some(l) => WatchItem::Listed(Box::new(l.clone())),
            None => WatchItem::Absent(Some(self.rv.to_string())),
        }
    }

    /// Changes after `rv`, oldest first.
    pub fn since(&self, rv: u64) -> Vec<WatchItem> {
        let start = self.history.partition_point(|(v, _)| *v <= rv);
        self.history[start..]
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// The operator deletes the Lease (`kubectl delete lease`).
    pub fn delete(&mut self) -> Option<WatchItem> {
        self.lease.take()?;
        self.rv += 1;
        let item = WatchItem::Absent(Some(self.rv.to_string()));
        self.history.push((self.rv, item.clone()));
        Some(item)
    }

    /// The operator clears `spec.holderIdentity` with a merge patch, leaving other fields.
    pub fn clear_holder(&mut self) -> Option<WatchItem> {
        let mut lease = self.lease.clone()?;
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        Some(self.commit(lease).1)
    }

    /// Another client touches the Lease (an annotation): a write that makes CAS writes fail.
    pub fn touch(&mut self) -> Option<WatchItem> {
        let mut lease = self.lease.clone()?;
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("sim/touched".into(), self.rv.to_string());
        Some(self.commit(lease).1)
    }
}
