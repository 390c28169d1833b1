//! Linearizability of a single register (reads and writes of one value), checked with the
//! Wing & Gong search and Lowe's memoisation of (linearized set, state) pairs.
//!
//! A history is linearizable when every operation can be given one instant between its
//! invocation and its completion such that, in the order of those instants, every read returns
//! the value of the latest write before it. Operations whose outcome the client never learned
//! (`pending`: a timeout, a 504) may take effect at any instant after their invocation, or never;
//! definitely failed operations did not happen and are left out by the caller.

use std::collections::HashSet;

/// One operation on the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOp {
    pub kind: RegisterKind,
    /// Microseconds on the run's monotonic clock.
    pub invoke_us: u64,
    /// `None` for a pending operation (outcome unknown): it never returns.
    pub complete_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterKind {
    Write(String),
    /// A read that returned this value.
    Read(String),
}

/// Why a history is not linearizable: the operation the search could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index (in the input) of an operation whose completion came before any valid placement.
    pub op: usize,
    pub detail: String,
}

/// An event of the search list: the invocation or the completion of an operation.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: Option<usize>,
    next: Option<usize>,
}

/// The doubly linked event list the search lifts operations out of and puts them back into.
struct Events {
    events: Vec<Event>,
    head: Option<usize>,
    /// For each operation, the index of its call event and of its return event (if any).
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

impl Events {
    fn new(ops: &[RegisterOp]) -> Events {
        // (time, order, op, is_call): an invocation at the same instant as a completion comes
        // first, so operations whose times merely touch count as concurrent (the clock's
        // resolution cannot order them, and a false violation is worse than a missed one).
        let mut raw: Vec<(u64, u8, usize, bool)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            raw.push((op.invoke_us, 0, i, true));
            if let Some(done) = op.complete_us {
                raw.push((done.max(op.invoke_us), 1, i, false));
            }
        }
        raw.sort();
        let n = raw.len();
        let mut events = Vec::with_capacity(n);
        let mut call_of = vec![0; ops.len()];
        let mut return_of = vec![None; ops.len()];
        for (pos, (_, _, op, is_call)) in raw.into_iter().enumerate() {
            events.push(Event { op, is_call, prev: pos.checked_sub(1), next: (pos + 1 < n).then_some(pos + 1) });
            if is_call {
                call_of[op] = pos;
            } else {
                return_of[op] = Some(pos);
            }
        }
        Events { events, head: (n > 0).then_some(0), call_of, return_of }
    }

    fn unlink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        match prev {
            Some(p) => self.events[p].next = next,
            None => self.head = next,
        }
        if let Some(n) = next {
            self.events[n].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        match prev {
            Some(p) => self.events[p].next = Some(e),
            None => self.head = Some(e),
        }
        if let Some(n) = next {
            self.events[n].prev = Some(e);
        }
    }

    /// Removes an operation's events (its call, then its return), as the search linearizes it.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(r) = self.return_of[op] {
            self.unlink(r);
        }
    }

    /// Puts them back, in the reverse order of [`Events::lift`].
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_of[op] {
            self.relink(r);
        }
        self.relink(self.call_of[op]);
    }
}

/// Checks a register history that starts from `initial`.
pub fn check_register(initial: &str, ops: &[RegisterOp]) -> Result<(), Violation> {
    let mut events = Events::new(ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut state: String = initial.to_string();
    let mut seen: HashSet<(Vec<u64>, String)> = HashSet::new();
    // (operation linearized, state before it)
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut cursor = events.head;
    loop {
        let Some(e) = cursor else {
            // Only invocations of pending operations can remain: every completed operation was
            // placed (its completion would otherwise have stopped the walk).
            return Ok(());
        };
        let Event { op, is_call, next, .. } = events.events[e];
        if is_call {
            let after = match &ops[op].kind {
                RegisterKind::Write(v) => Some(v.clone()),
                RegisterKind::Read(v) if *v == state => Some(state.clone()),
                RegisterKind::Read(_) => None,
            };
            if let Some(after) = after {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    events.lift(op);
                    cursor = events.head;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            cursor = next;
        } else {
            // The completion of an operation not yet placed: undo the latest placement.
            let Some((undone, before)) = stack.pop() else {
                return Err(Violation { op, detail: describe(op, &ops[op]) });
            };
            linearized[undone / 64] &= !(1 << (undone % 64));
            state = before;
            events.unlift(undone);
            cursor = events.events[events.call_of[undone]].next;
        }
    }
}

fn describe(index: usize, op: &RegisterOp) -> String {
    let what = match &op.kind {
        RegisterKind::Write(v) => format!("write {v:?}"),
        RegisterKind::Read(v) => format!("read {v:?}"),
    };
    format!("operation {index} ({what}, {}..{:?} µs) fits no linear order", op.invoke_us, op.complete_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &str, from: u64, to: u64) -> RegisterOp {
        RegisterOp { kind: RegisterKind::Write(v.into()), invoke_us: from, complete_us: Some(to) }
    }
    fn r(v: &str, from: u64, to: u64) -> RegisterOp {
        RegisterOp { kind: RegisterKind::Read(v.into()), invoke_us: from, complete_us: Some(to) }
    }
    fn pending_w(v: &str, from: u64) -> RegisterOp {
        RegisterOp { kind: RegisterKind::Write(v.into()), invoke_us: from, complete_us: None }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [w("a", 0, 1), r("a", 2, 3), w("b", 4, 5), r("b", 6, 7)];
        assert_eq!(check_register("init", &h), Ok(()));
    }

    #[test]
    fn initial_value_is_readable() {
        assert_eq!(check_register("init", &[r("init", 0, 1)]), Ok(()));
    }

    #[test]
    fn stale_read_after_a_completed_write_is_a_violation() {
        // The write of b completed before the read began, yet the read saw a.
        let h = [w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)];
        let v = check_register("init", &h).unwrap_err();
        assert!(v.detail.contains("fits no linear order"), "{v:?}");
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = [w("a", 0, 1), w("b", 2, 10), r("a", 3, 4), r("b", 5, 6)];
        assert_eq!(check_register("init", &h), Ok(()));
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Both reads overlap the write of b, but once b was seen, a later read cannot see a.
        let h = [w("a", 0, 1), w("b", 2, 20), r("b", 3, 4), r("a", 5, 6)];
        assert!(check_register("init", &h).is_err());
    }

    #[test]
    fn a_value_never_written_is_a_violation() {
        assert!(check_register("init", &[w("a", 0, 1), r("zzz", 2, 3)]).is_err());
    }

    #[test]
    fn pending_write_may_take_effect_late_or_never() {
        // The write of b never completed: a read may see it much later...
        let late = [w("a", 0, 1), pending_w("b", 2), r("a", 10, 11), r("b", 20, 21)];
        assert_eq!(check_register("init", &late), Ok(()));
        // ...or never.
        let never = [w("a", 0, 1), pending_w("b", 2), r("a", 30, 31)];
        assert_eq!(check_register("init", &never), Ok(()));
        // But not before it was invoked.
        let early = [w("a", 0, 1), r("b", 2, 3), pending_w("b", 4)];
        assert!(check_register("init", &early).is_err());
    }

    #[test]
    fn search_backtracks_through_many_concurrent_writes() {
        // Ten overlapping writes and reads that only fit one particular order.
        let mut h: Vec<RegisterOp> = (0..10).map(|i| w(&format!("v{i}"), 0, 100)).collect();
        for i in 0..10u64 {
            h.push(r(&format!("v{}", 9 - i), 101 + 2 * i, 101 + 2 * i + 1));
        }
        // After all writes completed the register holds one value: reads of different values
        // after that point cannot all be right.
        assert!(check_register("init", &h).is_err());
        let mut ok: Vec<RegisterOp> = (0..10).map(|i| w(&format!("v{i}"), 0, 100)).collect();
        ok.push(r("v3", 101, 102));
        ok.push(r("v3", 103, 104));
        assert_eq!(check_register("init", &ok), Ok(()));
    }

    #[test]
    fn touching_operations_count_as_concurrent() {
        // The write completes at 5 and the read starts at 5: the clock cannot order them.
        assert_eq!(check_register("init", &[w("a", 0, 5), r("init", 5, 6)]), Ok(()));
        // One microsecond later it can.
        assert!(check_register("init", &[w("a", 0, 5), r("init", 6, 7)]).is_err());
    }
}
