//! Latency samples and their summary (exact percentiles over every sample:
//! a run holds at most a few million, a few MB).

use serde::Serialize;

/// Samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<u32>);

impl Samples {
    /// Records one duration.
    pub fn push(&mut self, duration: std::time::Duration) {
        self.0
            .push(u32::try_from(duration.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The summary, in milliseconds.
    pub fn summary(&mut self) -> Summary {
        self.0.sort_unstable();
        let n = self.0.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            f64::from(self.0[rank - 1]) / 1000.0
        };
        let mean = if n == 0 {
            0.0
        } else {
            self.0.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64 / 1000.0
        };
        Summary {
            count: n as u64,
            min: at(0.0),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
            mean,
        }
    }

    /// Counts per bucket of `width_ms`, up to the 99.9th percentile (the rest
    /// in the last bucket), for the report's histograms.
    pub fn histogram(&mut self, buckets: usize) -> Vec<(f64, u64)> {
        self.0.sort_unstable();
        let Some(&top) = self
            .0
            .get((self.0.len() * 999 / 1000).min(self.0.len().saturating_sub(1)))
        else {
            return Vec::new();
        };
        let width = (f64::from(top) / 1000.0 / buckets as f64).max(0.001);
        let mut counts = vec![0u64; buckets];
        for &v in &self.0 {
            let i = ((f64::from(v) / 1000.0 / width) as usize).min(buckets - 1);
            counts[i] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as f64 * width, c))
            .collect()
    }
}

/// A latency summary, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::default();
        for ms in 1..=100 {
            samples.push(Duration::from_millis(ms));
        }
        let summary = samples.summary();
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50, 50.0);
        assert_eq!(summary.p99, 99.0);
        assert_eq!(summary.max, 100.0);
        assert_eq!(summary.min, 1.0);
        assert!((summary.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn an_empty_set_summarises_to_zeros() {
        assert_eq!(Samples::default().summary(), Summary::default());
        assert!(Samples::default().histogram(10).is_empty());
    }

    #[test]
    fn the_histogram_counts_every_sample() {
        let mut samples = Samples::default();
        for ms in 0..1000 {
            samples.push(Duration::from_millis(ms % 50));
        }
        let histogram = samples.histogram(10);
        assert_eq!(histogram.len(), 10);
        assert_eq!(histogram.iter().map(|(_, c)| c).sum::<u64>(), 1000);
    }
}
