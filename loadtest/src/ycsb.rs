//! YCSB's core workloads A–F and the key choosers they use, as YCSB defines them
//! (`site.ycsb.generator`): a zipfian over record ranks with constant 0.99 (Gray et al.,
//! "Quickly generating billion-record synthetic databases"), *scrambled* by an FNV-1a hash so
//! the popular records are spread over the key space; *latest*, a zipfian over recency; and
//! uniform.

use rand::Rng;

/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item count YCSB's scrambled zipfian draws ranks from before hashing them onto the
/// records, so every record is reachable whatever the record count.
pub const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// ζ(10¹⁰, 0.99), as YCSB precomputes it (`ScrambledZipfianGenerator.ZETAN`).
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// Ranks `0..items`, rank 0 the most popular, with probability ∝ 1 / (rank + 1)^θ.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// A zipfian over `items` ranks (at least 1). Computing ζ(n) walks every rank once.
    pub fn new(items: u64, theta: f64) -> Self {
        let items = items.max(1);
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A zipfian over `items` ranks whose ζ(n) is known (no walk over the ranks).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Self {
        let items = items.max(1);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// YCSB's scrambled-zipfian rank source: 10¹⁰ ranks, ζ precomputed.
    pub fn scrambled() -> Self {
        Zipfian::with_zetan(SCRAMBLED_ITEMS, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN)
    }

    /// A rank in `0..items`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// FNV-1a over the 8 bytes of `value`, as YCSB's `Utils.fnvhash64`.
pub fn fnv1a64(value: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // YCSB returns `Math.abs` of the signed hash.
    (hash as i64).wrapping_abs() as u64
}

/// How a workload picks the record an operation touches.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every record equally likely.
    Uniform,
    /// Zipfian popularity, popular records spread over the key space.
    ScrambledZipfian(Zipfian),
    /// The most recently inserted records most popular (zipfian over recency).
    Latest(Zipfian),
}

impl KeyChooser {
    /// A record in `0..records` (`records` ≥ 1: the records inserted so far, for `Latest`).
    pub fn next(&self, records: u64, rng: &mut impl Rng) -> u64 {
        let records = records.max(1);
        match self {
            KeyChooser::Uniform => rng.random_range(0..records),
            KeyChooser::ScrambledZipfian(z) => fnv1a64(z.next(rng)) % records,
            KeyChooser::Latest(z) => {
                let back = z.next(rng) % records;
                records - 1 - back
            }
        }
    }
}

/// One operation of a YCSB workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Read a record.
    Read,
    /// Overwrite a record.
    Update,
    /// Insert a new record (the next key).
    Insert,
    /// Read `len` records from a starting one.
    Scan,
    /// Read a record, then write it back with the read's context.
    ReadModifyWrite,
}

/// A YCSB core workload: its operation mix and how it picks records.
#[derive(Clone, Debug)]
pub struct Workload {
    /// `a`…`f`.
    pub name: char,
    /// `(operation, proportion)`, proportions summing to 1.
    pub mix: Vec<(Operation, f64)>,
    /// The key chooser.
    pub chooser: KeyChooser,
    /// Longest scan (workload E; scans are uniform in `1..=max_scan`).
    pub max_scan: u64,
}

impl Workload {
    /// Core workload `name` (`a`–`f`, either case) over `records` loaded records; `None` for
    /// another name.
    pub fn core(name: char, records: u64) -> Option<Workload> {
        use Operation::*;
        let zipfian = || KeyChooser::ScrambledZipfian(Zipfian::scrambled());
        let name = name.to_ascii_lowercase();
        let (mix, chooser) = match name {
            'a' => (vec![(Read, 0.5), (Update, 0.5)], zipfian()),
            'b' => (vec![(Read, 0.95), (Update, 0.05)], zipfian()),
            'c' => (vec![(Read, 1.0)], zipfian()),
            'd' => (
                vec![(Read, 0.95), (Insert, 0.05)],
                KeyChooser::Latest(Zipfian::new(records, ZIPFIAN_CONSTANT)),
            ),
            'e' => (vec![(Scan, 0.95), (Insert, 0.05)], zipfian()),
            'f' => (vec![(Read, 0.5), (ReadModifyWrite, 0.5)], zipfian()),
            _ => return None,
        };
        Some(Workload {
            name,
            mix,
            chooser,
            max_scan: 100,
        })
    }

    /// Workload A (50 % reads, 50 % updates, scrambled zipfian).
    pub fn a() -> Workload {
        Workload {
            name: 'a',
            mix: vec![(Operation::Read, 0.5), (Operation::Update, 0.5)],
            chooser: KeyChooser::ScrambledZipfian(Zipfian::scrambled()),
            max_scan: 100,
        }
    }

    /// The next operation, drawn from the mix.
    pub fn operation(&self, rng: &mut impl Rng) -> Operation {
        let mut u: f64 = rng.random();
        for (op, share) in &self.mix {
            if u < *share {
                return *op;
            }
            u -= share;
        }
        self.mix.last().map_or(Operation::Read, |(op, _)| *op)
    }
}

/// The key of record `n`, as YCSB names them (`user` + the record's hash), so neighbouring
/// records are not neighbouring keys.
pub fn key_of(n: u64) -> String {
    // As Java prints YCSB's (signed) hash.
    format!("user{}", fnv1a64(n) as i64)
}

/// YCSB's acknowledged counter: inserts take numbers in order, finish in any order (or fail),
/// and reads may only aim below [`limit`](Self::limit), the first number not yet acknowledged —
/// so a read never picks a record whose insert is still in flight.
#[derive(Debug)]
pub struct AcknowledgedCounter {
    next: std::sync::atomic::AtomicU64,
    window: std::sync::Mutex<(u64, std::collections::BTreeSet<u64>)>,
}

impl AcknowledgedCounter {
    /// A counter whose records `0..start` exist.
    pub fn new(start: u64) -> Self {
        AcknowledgedCounter {
            next: std::sync::atomic::AtomicU64::new(start),
            window: std::sync::Mutex::new((start, std::collections::BTreeSet::new())),
        }
    }

    /// The number the next insert writes.
    pub fn take(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks insert `n` finished (written or failed: a failed one is a gap reads may hit, as in
    /// YCSB, but never holds back those after it).
    pub fn acknowledge(&self, n: u64) {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (limit, pending) = &mut *window;
        if n < *limit {
            return;
        }
        pending.insert(n);
        while pending.remove(limit) {
            *limit += 1;
        }
    }

    /// Records below this number are acknowledged.
    pub fn limit(&self) -> u64 {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn zipfian_favours_low_ranks_as_the_law_says() {
        let z = Zipfian::new(1000, ZIPFIAN_CONSTANT);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            let rank = z.next(&mut rng);
            assert!(rank < 1000);
            if let Some(c) = counts.get_mut(rank as usize) {
                *c += 1;
            }
        }
        // P(rank 0) = 1/ζ(1000) ≈ 0.134 for θ = 0.99.
        let p0 = f64::from(counts.first().copied().unwrap_or(0)) / f64::from(draws);
        let expected = 1.0 / zeta(1000, ZIPFIAN_CONSTANT);
        assert!((p0 - expected).abs() < 0.01, "p0 {p0} vs {expected}");
        let head: u32 = counts.iter().take(10).sum();
        let tail: u32 = counts.iter().skip(990).sum();
        assert!(head > 20 * tail.max(1), "head {head}, tail {tail}");
    }

    #[test]
    fn the_acknowledged_limit_waits_for_every_earlier_insert() {
        let c = AcknowledgedCounter::new(10);
        let (a, b, d) = (c.take(), c.take(), c.take());
        assert_eq!((a, b, d), (10, 11, 12));
        c.acknowledge(11);
        c.acknowledge(12);
        assert_eq!(c.limit(), 10, "10 is still in flight");
        c.acknowledge(10);
        assert_eq!(c.limit(), 13);
        c.acknowledge(5);
        assert_eq!(c.limit(), 13);
    }

    #[test]
    fn keys_are_ycsbs() {
        // fnvhash64(0) in YCSB: Math.abs of 0xa8c7f832281a39c5 as a signed long.
        assert_eq!(key_of(0), "user6284781860667377211");
    }

    #[test]
    fn scrambled_zipfian_reaches_nearly_every_record() {
        let mut rng = StdRng::seed_from_u64(11);
        let chooser = KeyChooser::ScrambledZipfian(Zipfian::scrambled());
        let mut seen = [false; 100];
        for _ in 0..50_000 {
            if let Some(s) = seen.get_mut(chooser.next(100, &mut rng) as usize) {
                *s = true;
            }
        }
        let reached = seen.iter().filter(|s| **s).count();
        assert!(reached >= 98, "only {reached} of 100 records reachable");
    }

    #[test]
    fn choosers_stay_in_range_and_latest_prefers_the_newest() {
        let mut rng = StdRng::seed_from_u64(1);
        let latest = KeyChooser::Latest(Zipfian::new(100, ZIPFIAN_CONSTANT));
        let newest = (0..10_000)
            .filter(|_| latest.next(100, &mut rng) == 99)
            .count();
        assert!(newest > 1000, "{newest}");
        for chooser in [
            KeyChooser::Uniform,
            KeyChooser::ScrambledZipfian(Zipfian::scrambled()),
            latest,
        ] {
            for records in [1, 7, 100] {
                for _ in 0..1000 {
                    assert!(chooser.next(records, &mut rng) < records);
                }
            }
        }
    }

    #[test]
    fn core_workloads_mix_as_ycsb_does() {
        let mut rng = StdRng::seed_from_u64(3);
        for name in ['a', 'B', 'c', 'd', 'e', 'f'] {
            let w = Workload::core(name, 1000).unwrap_or_else(|| panic!("{name}"));
            let total: f64 = w.mix.iter().map(|(_, s)| s).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
        assert!(Workload::core('g', 10).is_none());
        let a = Workload::core('a', 1000).unwrap_or_else(|| panic!("a"));
        let reads = (0..10_000)
            .filter(|_| a.operation(&mut rng) == Operation::Read)
            .count();
        assert!((4500..5500).contains(&reads), "{reads}");
        assert_ne!(key_of(1), key_of(2));
    }
}
