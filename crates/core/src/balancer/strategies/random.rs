//! A uniformly random eligible server. The fast path draws one index and takes it when
//! it is eligible; otherwise the pick is drawn again uniformly among the eligible ones,
//! so a down server's share spreads evenly (never onto its neighbour alone).
//!
//! Also home of `Bits`, the small index set the other strategies share.

use super::{Candidates, PickContext, Strategy};

#[derive(Debug, Default)]
pub struct Random;

impl Random {
    pub fn new() -> Self {
        Self
    }
}

impl Strategy for Random {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let i = fastrand::usize(..n);
        if candidates.ok(i) {
            return Some(i);
        }
        // Mixing the fast path's uniform draw with this uniform redraw stays uniform.
        let eligible = Bits::eligible(candidates);
        match eligible.count() {
            0 => None,
            m => eligible.nth(fastrand::usize(..m)),
        }
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

/// A set of server indexes: one inline word for up to 64 servers (no allocation), a
/// heap vector of words beyond.
pub(super) enum Bits {
    One(u64),
    Many(Vec<u64>),
}

impl Bits {
    /// An empty set for indexes below `n`.
    pub(super) fn with_capacity(n: usize) -> Self {
        if n <= 64 {
            Self::One(0)
        } else {
            Self::Many(vec![0; n.div_ceil(64)])
        }
    }

    /// The indexes of `candidates` that may take the request.
    pub(super) fn eligible(candidates: &Candidates<'_>) -> Self {
        let n = candidates.len();
        let mut bits = Self::with_capacity(n);
        for i in 0..n {
            if candidates.ok(i) {
                bits.insert(i);
            }
        }
        bits
    }

    fn words(&self) -> &[u64] {
        match self {
            Self::One(word) => std::slice::from_ref(word),
            Self::Many(words) => words,
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Self::One(word) => std::slice::from_mut(word),
            Self::Many(words) => words,
        }
    }

    #[inline]
    pub(super) fn insert(&mut self, i: usize) {
        match self {
            Self::One(word) => {
                assert!(i < 64);
                *word |= 1 << i;
            }
            Self::Many(words) => words[i / 64] |= 1 << (i % 64),
        }
    }

    #[inline]
    pub(super) fn contains(&self, i: usize) -> bool {
        match self {
            Self::One(word) => i < 64 && word & (1 << i) != 0,
            Self::Many(words) => words[i / 64] & (1 << (i % 64)) != 0,
        }
    }

    pub(super) fn clear(&mut self) {
        self.words_mut().fill(0);
    }

    pub(super) fn count(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The `k`-th smallest index in the set (from 0), if the set has that many.
    pub(super) fn nth(&self, mut k: usize) -> Option<usize> {
        for (w, &word) in self.words().iter().enumerate() {
            let ones = word.count_ones() as usize;
            if k < ones {
                let mut word = word;
                for _ in 0..k {
                    word &= word - 1;
                }
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            k -= ones;
        }
        None
    }
}

/// Servers and contexts the strategies' tests share.
#[cfg(test)]
pub(super) mod testing {
    use std::sync::Arc;

    use super::super::{Candidates, PickContext, Strategy};
    use crate::balancer::Upstream;

    /// Servers `http://10.0.0.{i}:80` with the given weights.
    pub(in crate::balancer) fn weighted(weights: &[u32]) -> Vec<Arc<Upstream>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(Upstream::parse_weighted(&format!("http://10.0.0.{i}:80"), w).unwrap())
            })
            .collect()
    }

    pub(in crate::balancer) fn servers(n: usize) -> Vec<Arc<Upstream>> {
        weighted(&vec![1; n])
    }

    pub(in crate::balancer) fn ctx(headers: &http::HeaderMap) -> PickContext<'_> {
        PickContext {
            method: &http::Method::GET,
            path: "/",
            headers,
            client: None,
        }
    }

    /// How many of `picks` picks (all eligible but `excluded`) each server got.
    pub(in crate::balancer) fn counts(
        strategy: &dyn Strategy,
        servers: &[Arc<Upstream>],
        excluded: &[usize],
        picks: usize,
    ) -> Vec<usize> {
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let all = |_: &Upstream| true;
        let candidates = Candidates::new(servers, excluded, &all);
        let mut counts = vec![0; servers.len()];
        for _ in 0..picks {
            let i = strategy.pick(&candidates, &ctx).expect("a pick");
            assert!(!excluded.contains(&i), "picked excluded server {i}");
            counts[i] += 1;
        }
        counts
    }

    /// Every strategy: `None` when nothing is eligible, and one server always works.
    pub(in crate::balancer) fn none_when_nothing_is_ok_and_one_server_works(
        strategy: &dyn Strategy,
    ) {
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let all = |_: &Upstream| true;
        let none = |_: &Upstream| false;
        for n in [1, 3, 70] {
            let servers = servers(n);
            let down = Candidates::new(&servers, &[], &none);
            assert_eq!(strategy.pick(&down, &ctx), None, "{n} servers, all down");
            let every: Vec<usize> = (0..n).collect();
            let tried = Candidates::new(&servers, &every, &all);
            assert_eq!(strategy.pick(&tried, &ctx), None, "{n} servers, all tried");
        }
        let one = servers(1);
        let candidates = Candidates::new(&one, &[], &all);
        for _ in 0..100 {
            assert_eq!(strategy.pick(&candidates, &ctx), Some(0));
        }
        let empty: Vec<Arc<Upstream>> = Vec::new();
        assert_eq!(
            strategy.pick(&Candidates::new(&empty, &[], &all), &ctx),
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{counts, none_when_nothing_is_ok_and_one_server_works, servers};
    use super::*;

    #[test]
    fn bits_insert_count_nth_across_words() {
        for n in [1, 64, 65, 200] {
            let mut bits = Bits::with_capacity(n);
            let members: Vec<usize> = (0..n).filter(|i| i % 3 == 0 || i + 1 == n).collect();
            for &i in &members {
                bits.insert(i);
            }
            assert_eq!(bits.count(), members.len());
            for (k, &i) in members.iter().enumerate() {
                assert_eq!(bits.nth(k), Some(i), "n={n} k={k}");
                assert!(bits.contains(i));
            }
            assert_eq!(bits.nth(members.len()), None);
            bits.clear();
            assert_eq!(bits.count(), 0);
        }
    }

    /// 40,000 picks over 4 servers: a count is Binomial(40000, 0.25), σ = √(40000·¼·¾)
    /// ≈ 86.6 picks ≈ 0.22 %, so ±2 % is about 9σ: a fair pick never fails it, while a
    /// strategy that gives any server 27 % or 23 % fails it nearly always.
    #[test]
    fn shares_are_uniform_within_statistical_bounds() {
        let servers = servers(4);
        let picks = 40_000;
        let counts = counts(&Random, &servers, &[], picks);
        for (i, &c) in counts.iter().enumerate() {
            let share = c as f64 / picks as f64;
            assert!((share - 0.25).abs() < 0.02, "server {i}: {share}");
        }
    }

    /// A server that may not be picked gives its share to all the others evenly: with
    /// server 1 of 4 excluded, each other gets 1/3 (σ ≈ 0.24 % over 40,000 picks; ±2 %).
    /// Picking the next eligible index instead would give server 2 a half.
    #[test]
    fn an_ineligible_servers_share_spreads_evenly() {
        let servers = servers(4);
        let picks = 40_000;
        let counts = counts(&Random, &servers, &[1], picks);
        assert_eq!(counts[1], 0);
        for i in [0, 2, 3] {
            let share = counts[i] as f64 / picks as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.02, "server {i}: {share}");
        }
    }

    #[test]
    fn none_when_nothing_is_ok() {
        none_when_nothing_is_ok_and_one_server_works(&Random);
        assert_eq!(Random.name(), "random");
    }
}
