//! An hour's results in time order, kept with its hourly rollup in a compact form, so that a
//! range that starts or ends inside an hour is cut exactly from the rollup instead of being
//! read from the results.
//!
//! Each result is one entry: its time in microseconds after the start of its hour (as exact as
//! the results' timestamps), how
//! it counts (`Status`) and, when it got a response, the bucket of its response time
//! (`latency::bucket_of`). Stored form (`bytea`): per entry, the unsigned LEB128 number
//! `us << 3 | status << 1 | has_response`, then the bucket byte when it has a response. A
//! one-minute monitor's hour takes about 360 bytes. Entries need no order, so the timelines of
//! two parts of an hour are joined by putting one after the other.

use crate::latency::{bucket_of, Histogram};

/// Microseconds in an hour: entries lie in [0, US_PER_HOUR).
pub const US_PER_HOUR: u64 = 3_600_000_000;

/// How a result counts, as the rollups count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Up, outside maintenance windows.
    Good = 0,
    /// Down, outside maintenance windows.
    Failed = 1,
    /// In a maintenance window: neither up nor down.
    Maintenance = 2,
    /// Nobody checked the slot (lost, no_probe): neither up nor down.
    Unmonitored = 3,
}

impl Status {
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(Self::Good),
            1 => Some(Self::Failed),
            2 => Some(Self::Maintenance),
            3 => Some(Self::Unmonitored),
            _ => None,
        }
    }
}

/// A timeline or an entry that cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid result timeline: {0}")]
pub struct InvalidTimeline(&'static str);

/// Appends one result to a stored timeline.
pub fn push(
    timeline: &mut Vec<u8>,
    us: u64,
    status: Status,
    response_time_ms: Option<f64>,
) -> Result<(), InvalidTimeline> {
    if us >= US_PER_HOUR {
        return Err(InvalidTimeline("a time past the end of its hour"));
    }
    let mut rest = us << 3 | (status as u64) << 1 | u64::from(response_time_ms.is_some());
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            timeline.push(byte);
            break;
        }
        timeline.push(byte | 0x80);
    }
    if let Some(ms) = response_time_ms {
        timeline.push(bucket_of(ms));
    }
    Ok(())
}

/// What the entries of a timeline before a time add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub good: u64,
    pub failed: u64,
    pub maintenance: u64,
    pub unmonitored: u64,
    pub histogram: Histogram,
}

/// The entries of a stored timeline earlier than `before_us` microseconds after its hour's
/// start, added up.
pub fn before(timeline: &[u8], before_us: u64) -> Result<Part, InvalidTimeline> {
    let mut part = Part::default();
    let mut rest = timeline;
    while !rest.is_empty() {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let Some((&byte, tail)) = rest.split_first() else {
                return Err(InvalidTimeline("cut off in an entry"));
            };
            rest = tail;
            if shift > 35 {
                return Err(InvalidTimeline("an entry too long"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let us = value >> 3;
        if us >= US_PER_HOUR {
            return Err(InvalidTimeline("a time past the end of its hour"));
        }
        let bucket = if value & 1 == 1 {
            let Some((&bucket, tail)) = rest.split_first() else {
                return Err(InvalidTimeline("cut off before a bucket"));
            };
            rest = tail;
            Some(bucket)
        } else {
            None
        };
        if us >= before_us {
            continue;
        }
        match (value >> 1) & 3 {
            0 => part.good += 1,
            1 => part.failed += 1,
            2 => part.maintenance += 1,
            _ => part.unmonitored += 1,
        }
        if let Some(bucket) = bucket {
            part.histogram.add(bucket, 1);
        }
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(entries: &[(u64, Status, Option<f64>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(us, status, latency) in entries {
            push(&mut out, us, status, latency).unwrap();
        }
        out
    }

    #[test]
    fn a_cut_counts_the_entries_before_it() {
        let entries = [
            (0, Status::Good, Some(40.0)),
            (59_999_999, Status::Failed, Some(2_000.0)),
            (60_000_000, Status::Failed, None),
            (1_800_000_000, Status::Maintenance, Some(41.0)),
            (3_599_999_999, Status::Unmonitored, None),
        ];
        let stored = timeline(&entries);
        for cut in [
            0,
            1,
            59_999_999,
            60_000_000,
            60_000_001,
            1_800_000_000,
            3_599_999_999,
            US_PER_HOUR,
            u64::MAX,
        ] {
            let part = before(&stored, cut).unwrap();
            let mut expected = Part::default();
            for &(_, status, latency) in entries.iter().filter(|e| e.0 < cut) {
                match status {
                    Status::Good => expected.good += 1,
                    Status::Failed => expected.failed += 1,
                    Status::Maintenance => expected.maintenance += 1,
                    Status::Unmonitored => expected.unmonitored += 1,
                }
                if let Some(ms) = latency {
                    expected.histogram.record(ms);
                }
            }
            assert_eq!(part, expected, "cut at {cut}");
        }
    }

    #[test]
    fn timelines_of_two_parts_join_by_concatenation() {
        let first = timeline(&[(10, Status::Good, Some(5.0)), (20, Status::Failed, None)]);
        let second = timeline(&[(3_000_000_000, Status::Good, Some(7.0))]);
        let joined = [second.clone(), first.clone()].concat();
        let whole = before(&joined, US_PER_HOUR).unwrap();
        assert_eq!(
            (whole.good, whole.failed, whole.histogram.total()),
            (2, 1, 2)
        );
        assert_eq!(
            before(&joined, 1_000).unwrap(),
            before(&first, US_PER_HOUR).unwrap()
        );
    }

    #[test]
    fn an_hour_of_a_one_minute_monitor_is_small() {
        let entries: Vec<_> = (0..60)
            .map(|i: u32| {
                (
                    u64::from(i) * 60_000_000 + 123_456,
                    Status::Good,
                    Some(40.0 + f64::from(i)),
                )
            })
            .collect();
        assert!(
            timeline(&entries).len() <= 360,
            "{}",
            timeline(&entries).len()
        );
    }

    #[test]
    fn damaged_timelines_and_entries_are_refused() {
        assert!(push(&mut Vec::new(), US_PER_HOUR, Status::Good, None).is_err());
        assert!(before(&[0x80], 10).is_err()); // cut off
        assert!(before(&[0x01], 10).is_err()); // no bucket
        let past_the_hour = {
            let mut out = Vec::new();
            let mut rest = US_PER_HOUR << 3;
            while rest >= 0x80 {
                out.push((rest & 0x7f) as u8 | 0x80);
                rest >>= 7;
            }
            out.push(rest as u8);
            out
        };
        assert!(before(&past_the_hour, 10).is_err());
        assert!(before(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 10).is_err());
        assert_eq!(before(&[], 10), Ok(Part::default()));
    }
}
