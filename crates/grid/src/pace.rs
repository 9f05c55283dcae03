//! Pacing of the writes of one mutable directory: a token bucket.
//!
//! A bulk upload publishes again as soon as the last publish is done, and
//! both grids rewrite a mutable directory whole: the embedded grid reads,
//! decrypts, parses, serialises, encrypts and writes it (~0.3 s at 100,000
//! entries), a Tahoe node downloads, re-encodes and publishes it to every
//! storage server (0.08 s at 1,000 entries, 5 s at 100,000). Unpaced, a
//! writer spent most of its time rewriting its directory (on the embedded
//! grid 10,000 new files took 39 s to sync instead of 15; on Tahoe 1,000
//! took the nodes 47 s of CPU more than the same requests issued once).
//! So successive writes of one directory may take [`SHARE`] of the time:
//! each earns that share of the time passing as credit (up to [`BURST`]
//! seconds) and spends its own duration; a write that finds the credit
//! negative waits until it is even again (at most [`MAX_WAIT`]). Each paced
//! write carries more changes; a lone change or burst of changes never
//! waits.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Share of the time successive writes of one directory may take.
const SHARE: f64 = 0.1;
/// Write time a directory may use at once before pacing starts.
const BURST: f64 = 0.5;
/// The longest a write waits for its turn.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The pacing of every directory one grid handle writes, by key `K`.
#[derive(Debug)]
pub(crate) struct Paces<K> {
    /// Directories with fewer entries than this are cheap to write and are
    /// not paced.
    min_entries: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Seconds of write time still allowed at `at` (negative: owed).
    credit: f64,
    at: Instant,
    /// Entries after the last write.
    entries: usize,
}

impl Bucket {
    fn credit_at(&self, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * SHARE;
        (self.credit + earned).min(BURST)
    }
}

impl<K: Hash + Eq> Paces<K> {
    /// Paces directories of at least `min_entries` entries.
    pub(crate) fn new(min_entries: usize) -> Paces<K> {
        Paces {
            min_entries,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long a write of `dir` should wait for its turn.
    pub(crate) fn wait<Q: Hash + Eq + ?Sized>(&self, dir: &Q) -> Option<Duration>
    where
        K: Borrow<Q>,
    {
        self.wait_at(dir, Instant::now())
    }

    /// Records a write of `dir` that started at `started` and left it with
    /// `entries` entries (0 where the grid cannot tell).
    pub(crate) fn wrote(&self, dir: K, started: Instant, entries: usize) {
        self.wrote_at(dir, started, Instant::now(), entries);
    }

    fn wait_at<Q: Hash + Eq + ?Sized>(&self, dir: &Q, now: Instant) -> Option<Duration>
    where
        K: Borrow<Q>,
    {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.get(dir).filter(|b| b.entries >= self.min_entries)?;
        let owed = -b.credit_at(now);
        (owed > 0.0).then(|| Duration::from_secs_f64(owed / SHARE).min(MAX_WAIT))
    }

    fn wrote_at(&self, dir: K, started: Instant, now: Instant, entries: usize) {
        let took = now.saturating_duration_since(started).as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(dir).or_insert(Bucket {
            credit: BURST,
            at: now,
            entries,
        });
        *bucket = Bucket {
            credit: bucket.credit_at(now) - took,
            at: now,
            entries,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_once_their_share_is_spent_and_small_directories_never() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let paces = Paces::new(10);
        // A first write never waits; one that took less than the burst
        // leaves credit.
        assert_eq!(paces.wait_at(&"big", t0), None);
        paces.wrote_at("big", t0, at(200), 10);
        assert_eq!(paces.wait_at(&"big", at(200)), None);
        // Three seconds of writing: 2.7 s owed, which takes 27 s to earn;
        // the wait is capped. Earned back, no wait.
        paces.wrote_at("big", at(200), at(3_200), 10);
        assert_eq!(paces.wait_at(&"big", at(3_200)), Some(MAX_WAIT));
        assert_eq!(paces.wait_at(&"big", at(30_200)), None);
        // The same on a directory below the threshold: no wait.
        paces.wrote_at("small", t0, at(3_000), 9);
        assert_eq!(paces.wait_at(&"small", at(3_000)), None);
        // A short debt waits in proportion: 0.05 s owed, 0.5 s to earn,
        // less what was earned meanwhile.
        let paces = Paces::new(0);
        paces.wrote_at("dir", t0, at(550), 0);
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e3).round() as u64);
        assert_eq!(ms(paces.wait_at(&"dir", at(550))), Some(500));
        assert_eq!(ms(paces.wait_at(&"dir", at(650))), Some(400));
    }
}
