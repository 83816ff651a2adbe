//! A bounded record of the requests the server answered, like an API server audit log: tests
//! use it to prove who wrote what (only the leader's controller writes status) and the bench
//! to count Lease requests per minute.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many records are kept; older ones are dropped first.
const CAPACITY: usize = 200_000;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch when the request was answered.
    pub at_ms: i64,
    pub user: String,
    pub user_agent: String,
    pub verb: String,
    pub path: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status code of the response.
    pub code: u16,
}

impl AuditRecord {
    pub fn new(user: &str, user_agent: &str, verb: &str, path: &str) -> Self {
        AuditRecord {
            at_ms: jiff::Timestamp::now().as_millisecond(),
            user: user.to_string(),
            user_agent: user_agent.to_string(),
            verb: verb.to_string(),
            path: path.to_string(),
            group: String::new(),
            resource: String::new(),
            subresource: None,
            namespace: None,
            name: None,
            code: 0,
        }
    }
}

#[derive(Default)]
pub struct AuditLog {
    records: Mutex<VecDeque<AuditRecord>>,
}

impl AuditLog {
    pub fn push(&self, mut record: AuditRecord) {
        record.at_ms = jiff::Timestamp::now().as_millisecond();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= CAPACITY {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The records for which `keep` holds (cloning only those).
    pub fn records_where(&self, keep: impl Fn(&AuditRecord) -> bool) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
