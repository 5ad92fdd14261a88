//! A fixed table of `u64` words in 8-way sets of one cache line each: the storage of the
//! rate limits' buckets (`limit`) and the QoE session table (`analytics`). Allocated once;
//! a key's hash picks its set, and its users compare-and-swap words inside it.

use std::sync::atomic::AtomicU64;

/// Words per set.
pub(crate) const WAYS: usize = 8;

#[repr(align(64))]
struct Set([AtomicU64; WAYS]);

/// The sets.
pub(crate) struct Sets {
    sets: Box<[Set]>,
    mask: u64,
}

impl Sets {
    /// At least `slots` words (rounded up to a power of two of sets, at least one set).
    pub(crate) fn new(slots: usize) -> Self {
        let n = slots.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            sets: (0..n)
                .map(|_| Set(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            mask: n as u64 - 1,
        }
    }

    /// The set of hash `h` (its low bits).
    pub(crate) fn of(&self, h: u64) -> &[AtomicU64; WAYS] {
        &self.sets[(h & self.mask) as usize].0
    }

    /// Words in the table.
    pub(crate) fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Bytes the table takes.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn bytes(&self) -> usize {
        size_of_val(&*self.sets)
    }
}
