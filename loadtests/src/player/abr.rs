//! Throughput-based ABR, as hls.js does it: two exponentially weighted moving averages of
//! the measured segment throughput (a fast and a slow half-life, weighted by segment
//! duration), the lower of the two times a safety factor, bounded by the buffer level.

/// ABR settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// Fraction of the estimate a rendition may use (hls.js: 0.7 to 0.95).
    pub safety: f64,
    /// Half-life of the fast average, in seconds of media.
    pub fast_half_life: f64,
    /// Half-life of the slow average, in seconds of media.
    pub slow_half_life: f64,
    /// The estimate before any sample, bits per second.
    pub default_estimate: f64,
    /// Below this buffer level (seconds) the player does not switch up.
    pub min_buffer_to_switch_up: f64,
    /// Downloads smaller than this many bytes are latency, not throughput: not sampled.
    pub min_sample_bytes: u64,
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self {
            safety: 0.8,
            fast_half_life: 3.0,
            slow_half_life: 9.0,
            default_estimate: 1_000_000.0,
            min_buffer_to_switch_up: 4.0,
            min_sample_bytes: 16_000,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Ewma {
    alpha: f64,
    estimate: f64,
    weight: f64,
}

impl Ewma {
    fn new(half_life: f64) -> Self {
        Self {
            alpha: (0.5f64.ln() / half_life.max(0.001)).exp(),
            ..Self::default()
        }
    }
    fn sample(&mut self, weight: f64, value: f64) {
        let a = self.alpha.powf(weight);
        self.estimate = value * (1.0 - a) + a * self.estimate;
        self.weight += weight;
    }
    /// The average, corrected for its zero start.
    fn get(&self) -> f64 {
        let zero = 1.0 - self.alpha.powf(self.weight);
        if zero > 0.0 {
            self.estimate / zero
        } else {
            0.0
        }
    }
}

/// The throughput estimator and the rendition choice.
#[derive(Debug, Clone)]
pub struct Abr {
    cfg: AbrConfig,
    fast: Ewma,
    slow: Ewma,
}

impl Abr {
    /// A fresh estimator.
    pub fn new(cfg: AbrConfig) -> Self {
        let (fast, slow) = (Ewma::new(cfg.fast_half_life), Ewma::new(cfg.slow_half_life));
        Self { cfg, fast, slow }
    }

    /// Records one download: `bytes` in `seconds` of transfer, for `media_seconds` of media.
    pub fn sample(&mut self, bytes: u64, seconds: f64, media_seconds: f64) {
        if bytes < self.cfg.min_sample_bytes || seconds <= 0.0 {
            return;
        }
        let bps = bytes as f64 * 8.0 / seconds.max(0.000_1);
        let w = media_seconds.max(0.1);
        self.fast.sample(w, bps);
        self.slow.sample(w, bps);
    }

    /// The current estimate, bits per second.
    pub fn estimate(&self) -> f64 {
        if self.fast.weight == 0.0 {
            self.cfg.default_estimate
        } else {
            self.fast.get().min(self.slow.get())
        }
    }

    /// Picks an index into `bandwidths` (ascending): the highest within `safety` of the
    /// estimate; no switch up below `min_buffer_to_switch_up`; and while `playing`, stepping
    /// down until the next segment (`segment_seconds`) would download before the buffer
    /// (`buffer` seconds) runs dry.
    pub fn choose(
        &self,
        bandwidths: &[u64],
        current: Option<usize>,
        buffer: f64,
        segment_seconds: f64,
        playing: bool,
    ) -> usize {
        if bandwidths.is_empty() {
            return 0;
        }
        let est = self.estimate().max(1.0);
        let cap = self.cfg.safety * est;
        let mut best = bandwidths
            .iter()
            .rposition(|&b| b as f64 <= cap)
            .unwrap_or(0);
        if let Some(cur) = current
            && best > cur
            && buffer < self.cfg.min_buffer_to_switch_up
        {
            best = cur.min(bandwidths.len() - 1);
        }
        if playing {
            while best > 0 && bandwidths[best] as f64 * segment_seconds / est > buffer {
                best -= 1;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 4] = [500_000, 1_000_000, 2_000_000, 4_000_000];

    #[test]
    fn starts_from_the_default_estimate() {
        let abr = Abr::new(AbrConfig::default());
        assert_eq!(abr.estimate(), 1_000_000.0);
        assert_eq!(
            abr.choose(&LADDER, None, 0.0, 2.0, false),
            0,
            "0.8 Mbit/s cap"
        );
    }

    #[test]
    fn follows_throughput_up_and_down() {
        let mut abr = Abr::new(AbrConfig::default());
        for _ in 0..5 {
            abr.sample(2_500_000, 1.0, 2.0); // 20 Mbit/s
        }
        assert!((abr.estimate() - 20e6).abs() < 1e3, "{}", abr.estimate());
        assert_eq!(abr.choose(&LADDER, Some(0), 10.0, 2.0, true), 3);
        assert_eq!(
            abr.choose(&LADDER, Some(0), 1.0, 2.0, true),
            0,
            "no switch up on a low buffer"
        );
        // The link drops to 1.2 Mbit/s: the fast average follows quickly.
        abr.sample(300_000, 2.0, 2.0);
        abr.sample(300_000, 2.0, 2.0);
        abr.sample(300_000, 2.0, 2.0);
        assert!(abr.estimate() < 6e6, "{}", abr.estimate());
        for _ in 0..10 {
            abr.sample(300_000, 1.5, 2.0); // 1.6 Mbit/s: 1.28 usable
        }
        assert_eq!(abr.choose(&LADDER, Some(3), 30.0, 2.0, true), 1);
    }

    #[test]
    fn buffer_bounds_the_choice_while_playing() {
        let mut abr = Abr::new(AbrConfig::default());
        for _ in 0..10 {
            abr.sample(1_250_000, 1.0, 4.0); // 10 Mbit/s
        }
        // 4 Mbit/s x 4 s at 10 Mbit/s = 1.6 s: with 1 s of buffer, step down to 2 Mbit/s.
        assert_eq!(abr.choose(&LADDER, Some(3), 1.0, 4.0, true), 2);
        assert_eq!(abr.choose(&LADDER, Some(3), 5.0, 4.0, true), 3);
    }

    #[test]
    fn small_downloads_are_not_throughput() {
        let mut abr = Abr::new(AbrConfig::default());
        abr.sample(1_000, 0.5, 2.0);
        assert_eq!(abr.estimate(), 1_000_000.0);
    }
}
