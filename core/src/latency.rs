//! Latency histograms of rollups: response times counted in fixed, log-spaced buckets, so that
//! the histograms of any hours and days add up, and a percentile read from the sum is within
//! `MAX_RELATIVE_ERROR` of the exact one (`percentile_disc`).
//!
//! Bucket 0 holds times below `FLOOR_MS` (and anything that is not a time); bucket k ≥ 1
//! holds [FLOOR_MS · RATIO^(k−1), FLOOR_MS · RATIO^k); the last bucket also holds everything
//! above it (about 8.9 hours). A percentile is the geometric middle of the bucket that holds the
//! value of its rank, so it is off by at most √RATIO − 1 (4.4 %) of that value.
//!
//! Stored form (`bytea`): for each bucket that counted something, in bucket order, one byte for
//! the bucket and its count as an unsigned LEB128 number. An hour of a one-minute monitor takes
//! a few bytes per distinct bucket, typically 10 to 30 bytes in all.

/// Ratio of a bucket's upper bound to its lower bound.
pub const RATIO: f64 = 1.09;
/// Upper bound of bucket 0, in ms.
pub const FLOOR_MS: f64 = 0.01;
/// Buckets: 0 ..= 255.
pub const BUCKETS: usize = 256;
/// The largest relative error of a percentile at or above `FLOOR_MS`: √RATIO − 1.
pub const MAX_RELATIVE_ERROR: f64 = 0.044_030_650_891_055;

/// The bucket of a response time in ms.
pub fn bucket_of(ms: f64) -> u8 {
    if ms.is_nan() || ms < FLOOR_MS {
        return 0;
    }
    let k = 1.0 + ((ms / FLOOR_MS).ln() / RATIO.ln()).floor();
    // An infinite time lands in the last bucket too.
    k.min((BUCKETS - 1) as f64) as u8
}

/// Bounds of a bucket in ms: [lower, upper).
pub fn bounds(bucket: u8) -> (f64, f64) {
    match bucket {
        0 => (0.0, FLOOR_MS),
        k => (
            FLOOR_MS * RATIO.powi(i32::from(k) - 1),
            FLOOR_MS * RATIO.powi(i32::from(k)),
        ),
    }
}

/// The value a percentile that falls in this bucket reads as: the geometric middle of its
/// bounds (half the floor for bucket 0).
pub fn representative(bucket: u8) -> f64 {
    match bucket {
        0 => FLOOR_MS / 2.0,
        k => bounds(k).0 * RATIO.sqrt(),
    }
}

/// A histogram: counts by bucket, sparse and in bucket order, no zero counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<(u8, u64)>,
}

/// A stored histogram that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid latency histogram: {0}")]
pub struct InvalidHistogram(&'static str);

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one response time.
    pub fn record(&mut self, ms: f64) {
        self.add(bucket_of(ms), 1);
    }

    /// Adds `count` to a bucket.
    pub fn add(&mut self, bucket: u8, count: u64) {
        if count == 0 {
            return;
        }
        match self.counts.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(count),
            Err(i) => self.counts.insert(i, (bucket, count)),
        }
    }

    /// Adds another histogram to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for &(bucket, count) in &other.counts {
            self.add(bucket, count);
        }
    }

    /// Takes another histogram off this one, bucket by bucket, never below zero: what a range
    /// of running totals holds is the later total less the earlier one.
    pub fn subtract(&mut self, other: &Histogram) {
        for &(bucket, count) in &other.counts {
            if let Ok(i) = self.counts.binary_search_by_key(&bucket, |&(b, _)| b) {
                self.counts[i].1 = self.counts[i].1.saturating_sub(count);
            }
        }
        self.counts.retain(|&(_, count)| count > 0);
    }

    /// Adds a stored histogram to this one, without building it first.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), InvalidHistogram> {
        for entry in Entries::new(bytes) {
            let (bucket, count) = entry?;
            self.add(bucket, count);
        }
        Ok(())
    }

    /// How many times were counted.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, &(_, count)| sum.saturating_add(count))
    }

    /// The non-empty buckets with their counts, in bucket order.
    pub fn buckets(&self) -> &[(u8, u64)] {
        &self.counts
    }

    /// The `q` percentile (0 ≤ q ≤ 1) by nearest rank, as `percentile_disc` ranks: the value
    /// of rank ⌈q · n⌉ (at least 1), read as its bucket's representative. None when empty or
    /// q is not in [0, 1].
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for &(bucket, count) in &self.counts {
            seen = seen.saturating_add(count);
            if seen >= rank {
                return Some(representative(bucket));
            }
        }
        None
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.counts.len() * 2);
        for &(bucket, count) in &self.counts {
            out.push(bucket);
            let mut rest = count;
            loop {
                let byte = (rest & 0x7f) as u8;
                rest >>= 7;
                if rest == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    /// Reads the stored form; buckets must be in strictly increasing order with counts above 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidHistogram> {
        let mut histogram = Self::new();
        let mut last: Option<u8> = None;
        for entry in Entries::new(bytes) {
            let (bucket, count) = entry?;
            if last.is_some_and(|l| l >= bucket) {
                return Err(InvalidHistogram("buckets out of order"));
            }
            if count == 0 {
                return Err(InvalidHistogram("a bucket with a count of 0"));
            }
            last = Some(bucket);
            histogram.counts.push((bucket, count));
        }
        Ok(histogram)
    }
}

/// The (bucket, count) pairs of a stored histogram.
struct Entries<'a> {
    bytes: &'a [u8],
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<(u8, u64), InvalidHistogram>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&bucket, mut rest) = self.bytes.split_first()?;
        let mut count = 0u64;
        let mut shift = 0u32;
        loop {
            let Some((&byte, tail)) = rest.split_first() else {
                self.bytes = &[];
                return Some(Err(InvalidHistogram("cut off in a count")));
            };
            rest = tail;
            if shift > 63 || (shift == 63 && byte & 0x7f > 1) {
                self.bytes = &[];
                return Some(Err(InvalidHistogram("a count above 2^64")));
            }
            count |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        self.bytes = rest;
        Some(Ok((bucket, count)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency for tests).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The exact `percentile_disc`: the value of rank ⌈q · n⌉ (at least 1).
    fn exact(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn the_stated_error_bound_is_the_square_root_of_the_ratio() {
        assert!((MAX_RELATIVE_ERROR - (RATIO.sqrt() - 1.0)).abs() < 1e-12);
        const { assert!(MAX_RELATIVE_ERROR < 0.05) };
    }

    #[test]
    fn every_time_lies_in_its_bucket() {
        let mut rng = Lcg(7);
        for _ in 0..100_000 {
            // 0.01 ms to 10 minutes, log-uniform.
            let ms = FLOOR_MS * (6.0e7f64).powf(rng.next());
            let (lower, upper) = bounds(bucket_of(ms));
            // One ulp of slack at the bounds, where ln rounds.
            assert!(
                ms >= lower * (1.0 - 1e-12) && ms < upper * (1.0 + 1e-12),
                "{ms}"
            );
            let representative = representative(bucket_of(ms));
            assert!((representative - ms).abs() / ms <= MAX_RELATIVE_ERROR + 1e-9);
        }
    }

    #[test]
    fn odd_times_land_in_the_first_or_last_bucket() {
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(-3.0), 0);
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.009_999), 0);
        assert_eq!(bucket_of(FLOOR_MS), 1);
        assert_eq!(bucket_of(f64::INFINITY), 255);
        assert_eq!(bucket_of(1e12), 255);
        // Five minutes (the longest timeout) is well inside the range.
        assert!(bucket_of(300_000.0) < 230);
    }

    #[test]
    fn percentiles_of_merged_histograms_are_within_the_bound_of_the_exact_ones() {
        let mut rng = Lcg(42);
        for round in 0..50 {
            // Hours of different shapes: fast and steady, slow with a long tail, mixed.
            let hours = 1 + round % 24;
            let mut all = Vec::new();
            let mut merged = Histogram::new();
            for hour in 0..hours {
                let mut histogram = Histogram::new();
                let base = 1.0 + 300.0 * rng.next();
                for _ in 0..(1 + (rng.next() * 120.0) as usize) {
                    let ms = if rng.next() < 0.05 {
                        base * (1.0 + 50.0 * rng.next())
                    } else {
                        base * (0.8 + 0.4 * rng.next())
                    } + f64::from(hour);
                    histogram.record(ms);
                    all.push(ms);
                }
                // Through the stored form, as rollups keep it.
                merged
                    .merge_encoded(&histogram.encode())
                    .expect("own encoding");
            }
            all.sort_by(f64::total_cmp);
            assert_eq!(merged.total(), all.len() as u64);
            for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let exact = exact(&all, q);
                let read = merged.percentile(q).expect("not empty");
                assert!(
                    (read - exact).abs() / exact <= MAX_RELATIVE_ERROR + 1e-9,
                    "q {q}: {read} against {exact}"
                );
            }
        }
    }

    #[test]
    fn percentile_is_none_when_empty_or_out_of_range() {
        let mut histogram = Histogram::new();
        assert_eq!(histogram.percentile(0.5), None);
        histogram.record(10.0);
        assert_eq!(histogram.percentile(-0.1), None);
        assert_eq!(histogram.percentile(1.5), None);
        assert_eq!(histogram.percentile(f64::NAN), None);
        assert!(histogram.percentile(0.5).is_some());
    }

    #[test]
    fn the_stored_form_round_trips_and_is_small() {
        let mut histogram = Histogram::new();
        for ms in [0.5, 0.51, 12.0, 12.1, 12.2, 250.0, 30_000.0] {
            histogram.record(ms);
        }
        histogram.add(200, u64::MAX);
        histogram.add(200, 5); // saturates
        let bytes = histogram.encode();
        assert_eq!(Histogram::decode(&bytes), Ok(histogram.clone()));
        // An hour of a one-minute monitor around 40 ms.
        let mut hour = Histogram::new();
        let mut rng = Lcg(3);
        for _ in 0..60 {
            hour.record(40.0 * (0.9 + 0.2 * rng.next()));
        }
        assert!(hour.encode().len() <= 12, "{}", hour.encode().len());
        assert_eq!(Histogram::decode(&[]), Ok(Histogram::new()));
    }

    #[test]
    fn a_subtracted_histogram_holds_what_was_added_after() {
        let mut rng = Lcg(11);
        let mut before = Histogram::new();
        let mut after = Histogram::new();
        for i in 0..2000 {
            let ms = 5.0 + 200.0 * rng.next();
            if i < 1200 {
                before.record(ms);
            } else {
                after.record(ms);
            }
        }
        let mut total = before.clone();
        total.merge(&after);
        total.subtract(&before);
        assert_eq!(total, after);
        // Never below zero, and empty buckets go.
        let mut small = Histogram::new();
        small.record(10.0);
        small.subtract(&before);
        small.subtract(&after);
        assert_eq!(small.total(), 0);
        assert!(small.buckets().is_empty());
    }

    #[test]
    fn damaged_stored_forms_are_refused() {
        assert!(Histogram::decode(&[5]).is_err()); // no count
        assert!(Histogram::decode(&[5, 0x80]).is_err()); // cut off
        assert!(Histogram::decode(&[5, 1, 5, 1]).is_err()); // twice
        assert!(Histogram::decode(&[6, 1, 5, 1]).is_err()); // out of order
        assert!(Histogram::decode(&[5, 0]).is_err()); // zero
        let too_long = [
            5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(Histogram::decode(&too_long).is_err());
        let mut histogram = Histogram::new();
        assert!(histogram.merge_encoded(&[5, 0x80]).is_err());
    }
}
