//! Admission of analysis requests: a bounded number of them may hold their bodies in memory at
//! once, and **no organisation may hold more than its share**, so one tenant's slow or numerous
//! uploads cannot starve another's (together with the body read deadline, which frees a slot
//! held by an upload that never finishes).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

pub struct AnalysisSlots {
    total: Arc<Semaphore>,
    capacity: usize,
    per_tenant: usize,
    held: Mutex<HashMap<Uuid, usize>>,
}

/// One admitted request; the slot frees itself when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    org: Uuid,
    slots: Arc<AnalysisSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        if let Some(n) = held.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.org);
            }
        }
    }
}

impl AnalysisSlots {
    /// `capacity` slots in all; an organisation holds at most `per_tenant` of them (0: half the
    /// capacity, at least one).
    pub fn new(capacity: usize, per_tenant: usize) -> Arc<AnalysisSlots> {
        let capacity = capacity.max(1);
        let per_tenant = if per_tenant == 0 { (capacity / 2).max(1) } else { per_tenant.min(capacity) };
        Arc::new(AnalysisSlots {
            total: Arc::new(Semaphore::new(capacity)),
            capacity,
            per_tenant,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `org`, or `None` when the node or the organisation's share is full.
    pub fn try_admit(self: &Arc<Self>, org: Uuid) -> Option<Slot> {
        let mut held = self.held.lock();
        let mine = held.get(&org).copied().unwrap_or(0);
        if mine >= self.per_tenant {
            metrics::counter!("dermagate_analysis_admission_refused_total", "reason" => "tenant_share").increment(1);
            return None;
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            metrics::counter!("dermagate_analysis_admission_refused_total", "reason" => "node_full").increment(1);
            return None;
        };
        held.insert(org, mine + 1);
        Some(Slot { _permit: permit, org, slots: self.clone() })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: FM-02, FM-04, FM-06, R-03, R-17, REQ-5.2
    #[test]
    fn one_tenant_cannot_take_every_slot() {
        let slots = AnalysisSlots::new(4, 0);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let held: Vec<Slot> = (0..10).filter_map(|_| slots.try_admit(a)).collect();
        assert_eq!(held.len(), 2, "tenant a holds its share and no more");
        let other = slots.try_admit(b);
        assert!(other.is_some(), "another tenant is still admitted");
        drop(held);
        assert!(slots.try_admit(a).is_some(), "slots free themselves when dropped");
    }
}
