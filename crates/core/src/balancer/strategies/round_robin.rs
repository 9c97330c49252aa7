//! Each server in turn: one relaxed atomic increment a pick; an ineligible server is
//! skipped (its turn goes to the next one, as NGINX does).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidates, PickContext, Strategy};

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let i = n % candidates.len();
        if candidates.ok(i) {
            return Some(i);
        }
        candidates.first_ok_from(i + 1)
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}
