//! What clients were told: every write the cluster acknowledged (and every one whose outcome was
//! unknown), so the checker can compare it with what the cluster holds afterwards.

use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the cluster promised the write is durable.
    Acknowledged,
    /// Timeout, 504 or a dropped connection: it may or may not have happened.
    Unknown,
    /// A definite refusal (4xx, 503 before proposing): it must not have happened.
    Refused,
}

#[derive(Debug, Clone)]
pub struct Op {
    /// The resource path the write created, when the cluster said what it was.
    pub path: Option<String>,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn record(&self, path: Option<String>, status: Option<u16>) {
        let outcome = match status {
            Some(s) if (200..300).contains(&s) => Outcome::Acknowledged,
            Some(504) | None => Outcome::Unknown,
            Some(_) => Outcome::Refused,
        };
        self.ops.lock().expect("history lock").push(Op { path, outcome });
    }

    pub fn acknowledged(&self) -> Vec<String> {
        self.ops
            .lock()
            .expect("history lock")
            .iter()
            .filter(|o| o.outcome == Outcome::Acknowledged)
            .filter_map(|o| o.path.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ops.lock().expect("history lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
