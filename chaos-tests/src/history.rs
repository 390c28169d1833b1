//! What clients were told, and when: every operation of the workload as an invocation and a
//! completion on one monotonic clock (milliseconds since the run started), plus the faults the
//! nemesis injected. The checkers read nothing else, so a history is the whole evidence of a run.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// How a client saw an operation end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: the cluster promised it happened (and, for a write, that it is durable).
    Ok,
    /// A definite refusal (4xx, 503 before anything was proposed): it did not happen.
    Fail,
    /// Timeout, 504, a dropped connection, a 5xx from the proxy: it may or may not have happened.
    Unknown,
}

impl Outcome {
    /// The meaning of an HTTP answer (or of none) for a client.
    pub fn of_status(status: Option<u16>) -> Outcome {
        match status {
            Some(s) if (200..300).contains(&s) => Outcome::Ok,
            Some(502 | 504) | Some(500) | None => Outcome::Unknown,
            Some(_) => Outcome::Fail,
        }
    }
}

/// The kinds of operation, each with its own availability figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// `POST /v1/analyses`, one attempt.
    Analysis,
    /// A replicated write (user, client, organisation setting).
    Write,
    /// Token issuance (`/oauth/token`, sign-in).
    Token,
    /// A revocation (client deleted, token revoked, user disabled, signed out everywhere).
    Revocation,
    /// A read (report, series, own identity, organisation).
    Read,
}

impl OpClass {
    pub const ALL: [OpClass; 5] =
        [OpClass::Analysis, OpClass::Write, OpClass::Token, OpClass::Revocation, OpClass::Read];

    pub fn name(self) -> &'static str {
        match self {
            OpClass::Analysis => "analysis",
            OpClass::Write => "write",
            OpClass::Token => "token",
            OpClass::Revocation => "revocation",
            OpClass::Read => "read",
        }
    }

    /// Classes whose success needs a leader and a quorum (for the write-unavailability window).
    pub fn is_replicated_write(self) -> bool {
        matches!(self, OpClass::Write | OpClass::Revocation)
    }
}

/// One operation as a client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub process: String,
    pub class: OpClass,
    /// What was done, e.g. `create_user`, `read_register`.
    pub action: String,
    /// `lb` or `node<N>`: where the request went.
    pub target: String,
    /// Microseconds since the run started (one monotonic clock for every client).
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// The resource the operation created or read, when the answer said (a path or a value).
    pub value: Option<String>,
}

/// A fault the nemesis injected, from its start to the end of its healing.
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub kind: String,
    pub target: String,
    pub start_ms: u64,
    /// When the fault was removed (process restarted, rules deleted, space freed).
    pub end_ms: u64,
    /// When the cluster was healed again (all ready, applied indexes caught up), if it was.
    pub healed_ms: Option<u64>,
}

/// The shared record of a run.
pub struct History {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<FaultWindow>>,
}

impl History {
    pub fn new() -> History {
        History { origin: Instant::now(), ops: Mutex::default(), faults: Mutex::default() }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn push(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    pub fn push_fault(&self, fault: FaultWindow) {
        self.faults.lock().expect("history lock").push(fault);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    pub fn faults(&self) -> Vec<FaultWindow> {
        self.faults.lock().expect("history lock").clone()
    }

    /// The paths of resources whose creation the cluster acknowledged.
    pub fn acknowledged_paths(&self) -> Vec<String> {
        self.ops()
            .into_iter()
            .filter(|o| o.outcome == Outcome::Ok && o.class == OpClass::Write)
            .filter_map(|o| o.value.filter(|v| v.starts_with('/')))
            .collect()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

/// Starts recording one operation; [`Invocation::done`] completes it.
pub struct Invocation<'h> {
    history: &'h History,
    process: String,
    class: OpClass,
    action: String,
    target: String,
    invoke_us: u64,
}

impl History {
    pub fn invoke(&self, process: &str, class: OpClass, action: &str, target: &str) -> Invocation<'_> {
        Invocation {
            history: self,
            process: process.to_string(),
            class,
            action: action.to_string(),
            target: target.to_string(),
            invoke_us: self.now_us(),
        }
    }
}

impl Invocation<'_> {
    pub fn invoke_us(&self) -> u64 {
        self.invoke_us
    }

    /// Records the end of the operation; returns its outcome.
    pub fn done(self, status: Option<u16>, value: Option<String>) -> Outcome {
        self.done_as(Outcome::of_status(status), status, value)
    }

    /// Records the end with an outcome decided by the caller.
    pub fn done_as(self, outcome: Outcome, status: Option<u16>, value: Option<String>) -> Outcome {
        let complete_us = self.history.now_us();
        self.history.push(Op {
            process: self.process,
            class: self.class,
            action: self.action,
            target: self.target,
            invoke_us: self.invoke_us,
            complete_us,
            outcome,
            status,
            value,
        });
        outcome
    }
}
