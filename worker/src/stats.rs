//! Counters for the periodic one-line summary: claimed/s, done/s, errors, in flight,
//! write lag and start lateness (slot → request start) p50/p99.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Keep at most this many lateness samples per summary window.
const MAX_SAMPLES: usize = 100_000;

#[derive(Default)]
pub struct Stats {
    pub claimed: AtomicU64,
    pub done: AtomicU64,
    pub no_response: AtomicU64,
    pub written: AtomicU64,
    pub rejected: AtomicU64,
    pub released: AtomicU64,
    /// Largest age (ms) of a result when its batch was written, this window.
    pub write_lag_max_ms: AtomicU64,
    lateness_ms: Mutex<Vec<f64>>,
}

/// A snapshot of one window, taken by `Stats::take_window`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Window {
    pub claimed: u64,
    pub done: u64,
    pub no_response: u64,
    pub written: u64,
    pub rejected: u64,
    pub write_lag_max_ms: u64,
    pub lateness_p50_ms: Option<f64>,
    pub lateness_p99_ms: Option<f64>,
}

impl Stats {
    pub fn record_lateness(&self, lateness: Duration) {
        let mut samples = self.lateness_ms.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MAX_SAMPLES {
            samples.push(lateness.as_secs_f64() * 1000.0);
        }
    }

    pub fn record_write_lag(&self, lag: Duration) {
        self.write_lag_max_ms
            .fetch_max(lag.as_millis() as u64, Relaxed);
    }

    /// Returns the counters since the last call and resets them.
    pub fn take_window(&self) -> Window {
        let mut samples =
            std::mem::take(&mut *self.lateness_ms.lock().unwrap_or_else(|p| p.into_inner()));
        samples.sort_by(|a, b| a.total_cmp(b));
        Window {
            claimed: self.claimed.swap(0, Relaxed),
            done: self.done.swap(0, Relaxed),
            no_response: self.no_response.swap(0, Relaxed),
            written: self.written.swap(0, Relaxed),
            rejected: self.rejected.swap(0, Relaxed),
            write_lag_max_ms: self.write_lag_max_ms.swap(0, Relaxed),
            lateness_p50_ms: percentile(&samples, 0.50),
            lateness_p99_ms: percentile(&samples, 0.99),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Window {
    pub fn log_line(&self, seconds: f64, in_flight: usize) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "claimed/s={:.1} done/s={:.1} no_response={} written={} rejected={} in_flight={} write_lag_max_ms={} lateness_p50_ms={} lateness_p99_ms={}",
            self.claimed as f64 / seconds,
            self.done as f64 / seconds,
            self.no_response,
            self.written,
            self.rejected,
            in_flight,
            self.write_lag_max_ms,
            ms(self.lateness_p50_ms),
            ms(self.lateness_p99_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn a_window_resets_the_counters() {
        let stats = Stats::default();
        stats.claimed.fetch_add(10, Relaxed);
        stats.record_lateness(Duration::from_millis(3));
        stats.record_write_lag(Duration::from_millis(40));
        let window = stats.take_window();
        assert_eq!(window.claimed, 10);
        assert_eq!(window.lateness_p99_ms, Some(3.0));
        assert_eq!(window.write_lag_max_ms, 40);
        assert_eq!(stats.take_window(), Window::default());
    }
}
