//! A set of IPv4 addresses stored as disjoint, maximal runs, for the allocator's "first address
//! at or after X that is not in the set" query in O(log runs).
//!
//! The lease table keeps every address that has a record, an offer hold or a quarantine entry
//! here; the first gap at or after the range start is then the lowest never-touched address,
//! found without walking the addresses already in use.

use std::collections::BTreeMap;

/// Addresses (as `u32`) held as inclusive runs `start → end`; runs never touch or overlap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AddrSet {
    runs: BTreeMap<u32, u32>,
}

impl AddrSet {
    /// An empty set.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of addresses in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.runs.iter().map(|(s, e)| u64::from(e - s) + 1).sum()
    }

    /// The run containing `v`, if any.
    fn run_of(&self, v: u32) -> Option<(u32, u32)> {
        self.runs
            .range(..=v)
            .next_back()
            .filter(|(_, end)| **end >= v)
            .map(|(s, e)| (*s, *e))
    }

    /// True if `v` is in the set.
    pub(crate) fn contains(&self, v: u32) -> bool {
        self.run_of(v).is_some()
    }

    /// Add `v` (merging with the neighbouring runs).
    pub(crate) fn insert(&mut self, v: u32) {
        if self.contains(v) {
            return;
        }
        let left = v
            .checked_sub(1)
            .and_then(|p| self.run_of(p))
            .map(|(s, _)| s);
        let right_end = v
            .checked_add(1)
            .and_then(|n| self.runs.get(&n).copied().map(|e| (n, e)));
        let start = left.unwrap_or(v);
        let end = match right_end {
            Some((n, e)) => {
                self.runs.remove(&n);
                e
            }
            None => v,
        };
        self.runs.insert(start, end);
    }

    /// Remove `v` (splitting its run).
    pub(crate) fn remove(&mut self, v: u32) {
        let Some((s, e)) = self.run_of(v) else { return };
        self.runs.remove(&s);
        if s < v {
            self.runs.insert(s, v - 1);
        }
        if v < e {
            self.runs.insert(v + 1, e);
        }
    }

    /// Set membership of `v` to `present`.
    pub(crate) fn set(&mut self, v: u32, present: bool) {
        if present {
            self.insert(v);
        } else {
            self.remove(v);
        }
    }

    /// The lowest value `>= v` that is not in the set (`None` only past `u32::MAX`).
    pub(crate) fn first_gap_from(&self, v: u32) -> Option<u32> {
        match self.run_of(v) {
            // Runs are maximal, so the value after a run's end is never in the set.
            Some((_, end)) => end.checked_add(1),
            None => Some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn runs_merge_and_split() {
        let mut s = AddrSet::new();
        for v in [5, 7, 6, 3] {
            s.insert(v);
        }
        assert_eq!(s.runs.len(), 2, "{s:?}");
        assert_eq!(s.first_gap_from(5), Some(8));
        assert_eq!(s.first_gap_from(3), Some(4));
        assert_eq!(s.first_gap_from(4), Some(4));
        s.remove(6);
        assert_eq!(s.first_gap_from(5), Some(6));
        assert_eq!(s.len(), 3);
        s.insert(u32::MAX);
        assert_eq!(s.first_gap_from(u32::MAX), None);
        s.insert(0);
        s.remove(0);
        s.remove(0);
        assert_eq!(s.len(), 4);
    }

    proptest! {
        /// Against a plain `BTreeSet`: same membership, same first gap, runs stay maximal.
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..200)) {
            let mut s = AddrSet::new();
            let mut model = BTreeSet::new();
            for (add, v) in ops {
                s.set(v, add);
                if add { model.insert(v); } else { model.remove(&v); }
                prop_assert_eq!(s.len(), model.len() as u64);
                for q in 0..66u32 {
                    prop_assert_eq!(s.contains(q), model.contains(&q));
                    let gap = (q..).find(|x| !model.contains(x));
                    prop_assert_eq!(s.first_gap_from(q), gap);
                }
                let mut prev_end: Option<u32> = None;
                for (a, b) in &s.runs {
                    prop_assert!(a <= b);
                    if let Some(p) = prev_end {
                        prop_assert!(p + 1 < *a, "runs {:?} touch", s.runs);
                    }
                    prev_end = Some(*b);
                }
            }
        }
    }
}
