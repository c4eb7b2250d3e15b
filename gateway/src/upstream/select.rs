//! Member selection, lock-free on the request path: a precomputed smooth weighted
//! round-robin schedule, power-of-two-choices least-request, and a ketama ring.

use super::Member;
use portico_plugins::hash::StableHasher;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest precomputed schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 16;
/// Ring points per unit of weight.
const RING_POINTS_PER_WEIGHT: u32 = 40;

/// Smooth weighted round robin (nginx's algorithm), run once at compile time: the schedule
/// spreads each member's turns evenly instead of in bursts.
pub fn wrr_schedule(weights: &[u32]) -> Vec<u16> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|&w| (i64::from(w) / scale as i64).max(1))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u16);
    }
    schedule
}

pub struct RoundRobin {
    schedule: Vec<u16>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(members: &[Arc<Member>]) -> Self {
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        RoundRobin {
            schedule: wrr_schedule(&weights),
            next: AtomicUsize::new(0),
        }
    }

    /// The next healthy member not in `skip`, following the schedule.
    pub fn pick(&self, members: &[Arc<Member>], skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let first = self.schedule[start % self.schedule.len()] as usize;
        if members[first].is_available() && !skip(first) {
            return Some(first);
        }
        // The scheduled member is out: take the next available one in member order, so the
        // remaining members share its turns evenly.
        (1..members.len())
            .map(|k| (first + k) % members.len())
            .find(|&i| members[i].is_available() && !skip(i))
    }

    /// A weighted random member (used by least-request to draw its two candidates).
    pub fn random(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        Some(self.schedule[fast_random() as usize % self.schedule.len()] as usize)
    }
}

pub struct LeastRequest {
    weighted: RoundRobin,
}

impl LeastRequest {
    pub fn new(members: &[Arc<Member>]) -> Self {
        LeastRequest {
            weighted: RoundRobin::new(members),
        }
    }

    pub fn pick(&self, members: &[Arc<Member>], skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let usable = |i: usize| members[i].is_available() && !skip(i);
        let a = self.weighted.random().filter(|&i| usable(i));
        let b = self.weighted.random().filter(|&i| usable(i));
        match (a, b) {
            (Some(a), Some(b)) => {
                // Compare in-flight per unit of weight without dividing.
                let la = members[a].inflight() as u64 * u64::from(members[b].weight);
                let lb = members[b].inflight() as u64 * u64::from(members[a].weight);
                Some(if lb < la { b } else { a })
            }
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => self.weighted.pick(members, skip),
        }
    }
}

pub struct Ring {
    points: Vec<(u64, u16)>,
}

impl Ring {
    pub fn new(members: &[Arc<Member>]) -> Self {
        let mut points = Vec::new();
        for (idx, m) in members.iter().enumerate() {
            for i in 0..m.weight.saturating_mul(RING_POINTS_PER_WEIGHT) {
                let point = StableHasher::new()
                    .part(0, m.address.as_bytes())
                    .part(1, &i.to_le_bytes())
                    .finish();
                points.push((point, idx as u16));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first available member clockwise from the key's point on the ring.
    pub fn pick(
        &self,
        members: &[Arc<Member>],
        key: u64,
        skip: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(h, _)| *h < key);
        (0..self.points.len())
            .map(|k| self.points[(start + k) % self.points.len()].1 as usize)
            .find(|&i| members[i].is_available() && !skip(i))
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let seed = portico_plugins::clock::since_unix_epoch().as_nanos() as u64
            ^ 0x9E37_79B9_7F4A_7C15;
        let local = 0u8;
        (seed ^ (&local as *const u8 as u64)) | 1
    });
}

/// xorshift64*: cheap, thread-local; good enough for load balancing, not for secrets.
pub fn fast_random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(wrr_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let s = wrr_schedule(&[3, 1]);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = wrr_schedule(&[1000; 200]);
        assert!(s.len() as u64 <= MAX_SCHEDULE);
        assert_eq!(s.len() % 200, 0);
    }
}
