//! Asking the CPU for memory before it is read. The held hashes and the repeated-email
//! filter are tens of megabytes read at random, one place a row: a lookup waits on the
//! memory for each (`perf` on a 1M changed night on SQLite: `HeldHashes::position` and
//! `Repeats::note` were a third of the thread that stages the rows). Asked for a batch
//! of rows ahead, those reads overlap instead of following one another.

/// Asks for the cache line holding `at`. A hint: it reads nothing into the program,
/// and on a CPU without the instruction it does nothing.
#[inline]
pub(super) fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch loads no value and cannot fault, whatever the address; this
        // one is of a live reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(at).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
