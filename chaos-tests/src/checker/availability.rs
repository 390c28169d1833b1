//! Availability as clients saw it: the share of operations that succeeded, per class, per
//! second and overall; and per fault the longest stretch with no successful write and with no
//! successful analysis (pMax unavailability), and how many elections the fault caused.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Op, OpClass, Outcome};
use crate::monitor::Sample;
use crate::nemesis::FaultRecord;
use crate::workload::LogicalAnalysis;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratio {
    pub ok: u64,
    pub total: u64,
    pub ratio: f64,
}

impl Ratio {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        if ok {
            self.ok += 1;
        }
        self.ratio = self.ok as f64 / self.total as f64;
    }
}

/// Per operation class over the whole run.
pub fn per_class(ops: &[Op]) -> BTreeMap<&'static str, Ratio> {
    let mut out: BTreeMap<&'static str, Ratio> = BTreeMap::new();
    for o in ops {
        out.entry(o.class.name()).or_default().add(o.outcome == Outcome::Ok);
    }
    out
}

/// Logical analyses (all attempts under one key) that ended with a report, through the load
/// balancer only: what an integrator that retries as the IFU says experiences.
pub fn analyses_with_retries(analyses: &[LogicalAnalysis]) -> Ratio {
    let mut r = Ratio::default();
    for a in analyses.iter().filter(|a| a.via_lb) {
        r.add(a.report_id.is_some());
    }
    r
}

/// One second of the run: successes and attempts per class, and the p99 latency of all ops.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub t_s: u64,
    pub classes: BTreeMap<&'static str, Ratio>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Operations by the second in which they completed.
pub fn timeline(ops: &[Op], duration_s: u64) -> Vec<Bucket> {
    let mut buckets: Vec<(BTreeMap<&'static str, Ratio>, Vec<u64>)> = vec![Default::default(); duration_s as usize + 1];
    for o in ops {
        let i = ((o.complete_us / 1_000_000) as usize).min(buckets.len() - 1);
        buckets[i].0.entry(o.class.name()).or_default().add(o.outcome == Outcome::Ok);
        if o.outcome == Outcome::Ok {
            buckets[i].1.push(o.complete_us.saturating_sub(o.invoke_us));
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(t, (classes, mut lat))| {
            lat.sort_unstable();
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                    .map_or(0.0, |v| *v as f64 / 1000.0)
            };
            Bucket { t_s: t as u64, classes, p50_ms: pct(0.5), p99_ms: pct(0.99) }
        })
        .collect()
}

/// The longest time inside `[from_us, to_us]` with no successful completion of a matching op.
pub fn pmax_unavailable_ms(ops: &[Op], from_us: u64, to_us: u64, matches: impl Fn(&Op) -> bool) -> u64 {
    let mut times: Vec<u64> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches(o))
        .map(|o| o.complete_us)
        .filter(|t| *t >= from_us && *t <= to_us)
        .collect();
    times.sort_unstable();
    let mut last = from_us;
    let mut worst = 0;
    for t in times.into_iter().chain(std::iter::once(to_us)) {
        worst = worst.max(t - last);
        last = t;
    }
    worst / 1000
}

/// Term increases seen by the monitor inside a window: the elections a fault caused.
pub fn elections(samples: &[Sample], from_us: u64, to_us: u64) -> u64 {
    let seen = |s: &&Sample| s.answered && s.t_us <= to_us;
    let before = samples.iter().filter(|s| s.answered && s.t_us < from_us).map(|s| s.term).max();
    let before = before.or_else(|| samples.iter().filter(seen).map(|s| s.term).min()).unwrap_or(0);
    let during = samples.iter().filter(seen).map(|s| s.term).max().unwrap_or(before);
    during.saturating_sub(before)
}

/// The figures of one fault for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    pub kind: String,
    pub target: String,
    pub start_s: f64,
    pub end_s: f64,
    pub healed_s: Option<f64>,
    pub pmax_write_unavailable_ms: u64,
    pub pmax_analysis_unavailable_ms: u64,
    pub elections: u64,
    /// Elections where the fault spared the leader (must be 0).
    pub unexpected_elections: u64,
    pub served_after_cut_ms: Option<u64>,
    pub detail: String,
}

/// How long after a fault's heal a term increase still counts as the fault's (the monitor samples
/// ten times a second), unless the next fault has begun by then.
const ELECTION_TAIL_US: u64 = 500_000;

/// The end of the window in which a fault's elections are counted: its heal plus a short tail,
/// but never into the next fault (a leader kill right after another fault is that kill's
/// election, not the other fault's).
fn election_window_end(healed_us: u64, next_start_us: Option<u64>) -> u64 {
    let end = healed_us + ELECTION_TAIL_US;
    next_start_us.map_or(end, |next| end.min(next.max(healed_us)))
}

/// Figures per fault: the window runs from the injection to the heal (or 10 s past the removal).
pub fn per_fault(ops: &[Op], samples: &[Sample], faults: &[FaultRecord]) -> Vec<FaultFigures> {
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let from = f.start_ms * 1000;
            let to = f.healed_ms.unwrap_or(f.end_ms + 10_000) * 1000;
            let next_start = faults.get(i + 1).map(|n| n.start_ms * 1000);
            let elections = elections(samples, from, election_window_end(to, next_start));
            FaultFigures {
                kind: f.kind.name().to_string(),
                target: f.target.clone(),
                start_s: f.start_ms as f64 / 1000.0,
                end_s: f.end_ms as f64 / 1000.0,
                healed_s: f.healed_ms.map(|h| h as f64 / 1000.0),
                pmax_write_unavailable_ms: pmax_unavailable_ms(ops, from, to, |o| o.class.is_replicated_write()),
                pmax_analysis_unavailable_ms: pmax_unavailable_ms(ops, from, to, |o| o.class == OpClass::Analysis),
                elections,
                unexpected_elections: if f.kind.spares_the_leader() { elections } else { 0 },
                served_after_cut_ms: f.served_after_cut_ms,
                detail: f.detail.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(class: OpClass, ok: bool, complete_ms: u64) -> Op {
        Op {
            process: "t".into(),
            class,
            action: "a".into(),
            target: "lb".into(),
            invoke_us: complete_ms * 1000 - 1000,
            complete_us: complete_ms * 1000,
            outcome: if ok { Outcome::Ok } else { Outcome::Fail },
            status: None,
            value: None,
        }
    }

    #[test]
    fn pmax_is_the_longest_gap_between_successes_inside_the_window() {
        let ops = [
            op(OpClass::Write, true, 100),
            op(OpClass::Write, true, 300),
            op(OpClass::Write, false, 500),
            op(OpClass::Write, true, 1200),
            op(OpClass::Read, true, 700),
        ];
        // Window 0..1500 ms: gaps 100, 200, 900 (300 -> 1200), 300.
        assert_eq!(pmax_unavailable_ms(&ops, 0, 1_500_000, |o| o.class == OpClass::Write), 900);
        // No success at all: the whole window.
        assert_eq!(pmax_unavailable_ms(&ops, 2_000_000, 3_000_000, |o| o.class == OpClass::Write), 1000);
    }

    #[test]
    fn per_class_counts_every_attempt() {
        let ops = [op(OpClass::Write, true, 1), op(OpClass::Write, false, 2), op(OpClass::Read, true, 3)];
        let r = per_class(&ops);
        assert_eq!((r["write"].ok, r["write"].total), (1, 2));
        assert_eq!(r["read"].ratio, 1.0);
    }

    #[test]
    fn elections_count_term_increases_in_the_window() {
        let s = |t_ms: u64, term: u64| Sample {
            t_us: t_ms * 1000,
            node: 1,
            answered: true,
            ready: true,
            role: "follower".into(),
            term,
            leader: Some(1),
            applied: 0,
        };
        let samples = [s(0, 3), s(100, 3), s(200, 4), s(300, 5), s(900, 6)];
        assert_eq!(elections(&samples, 150_000, 400_000), 2);
        assert_eq!(elections(&samples, 0, 50_000), 0);
    }

    #[test]
    fn the_tail_of_a_fault_stops_where_the_next_fault_begins() {
        // Healed at 10 s; a leader kill starts at 10.2 s and its election is seen at 10.4 s: it
        // belongs to the kill, not to the fault before it.
        assert_eq!(election_window_end(10_000_000, Some(10_200_000)), 10_200_000);
        assert_eq!(election_window_end(10_000_000, Some(12_000_000)), 10_500_000);
        assert_eq!(election_window_end(10_000_000, None), 10_500_000);
        // A next fault recorded as starting before this heal never shrinks the window below it.
        assert_eq!(election_window_end(10_000_000, Some(9_000_000)), 10_000_000);
    }
}

/// Figures of every fault of one kind (a soak run has many leader kills).
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    pub kind: String,
    pub count: usize,
    pub pmax_write_median_ms: u64,
    pub pmax_write_max_ms: u64,
    pub pmax_analysis_median_ms: u64,
    pub pmax_analysis_max_ms: u64,
    pub elections: u64,
}

pub fn per_kind(faults: &[FaultFigures]) -> Vec<KindFigures> {
    let mut kinds: BTreeMap<&str, Vec<&FaultFigures>> = BTreeMap::new();
    for f in faults {
        kinds.entry(f.kind.as_str()).or_default().push(f);
    }
    let median_max = |mut v: Vec<u64>| {
        v.sort_unstable();
        (v.get(v.len() / 2).copied().unwrap_or(0), v.last().copied().unwrap_or(0))
    };
    kinds
        .into_iter()
        .map(|(kind, fs)| {
            let (wm, wx) = median_max(fs.iter().map(|f| f.pmax_write_unavailable_ms).collect());
            let (am, ax) = median_max(fs.iter().map(|f| f.pmax_analysis_unavailable_ms).collect());
            KindFigures {
                kind: kind.to_string(),
                count: fs.len(),
                pmax_write_median_ms: wm,
                pmax_write_max_ms: wx,
                pmax_analysis_median_ms: am,
                pmax_analysis_max_ms: ax,
                elections: fs.iter().map(|f| f.elections).sum(),
            }
        })
        .collect()
}
