//! Durations kept in bounded memory: count, sum and maximum exactly, percentiles from a uniform
//! reservoir of at most [`RESERVOIR`] values (a run of hours at 100,000 skbs a second must not
//! keep every one). Our own: a reservoir is ten lines, and no maintained crate offers just this.

/// Values kept for percentiles.
pub const RESERVOIR: usize = 1 << 16;

#[derive(Clone, Debug, Default)]
pub struct Samples {
    count: u64,
    sum: u128,
    max: u64,
    kept: Vec<u64>,
    /// xorshift state for the reservoir's choices.
    rng: u64,
}

impl Samples {
    pub fn push(&mut self, v: u64) {
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
        if self.kept.len() < RESERVOIR {
            self.kept.push(v);
            return;
        }
        // Algorithm R: the n-th value replaces a kept one with probability RESERVOIR / n.
        let j = self.next() % self.count;
        if (j as usize) < RESERVOIR {
            self.kept[j as usize] = v;
        }
    }

    /// Adds every value `other` holds (`report`'s groups of sockets): count, sum and maximum
    /// exactly; percentiles exact while the two together kept every value, else from a
    /// reservoir that favours neither side much.
    pub fn merge(&mut self, other: &Samples) {
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
        for &v in &other.kept {
            if self.kept.len() < RESERVOIR {
                self.kept.push(v);
            } else {
                let j = self.next() % self.count.max(1);
                if (j as usize) < RESERVOIR {
                    self.kept[j as usize] = v;
                }
            }
        }
    }

    fn next(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = 0x9e37_79b9_7f4a_7c15;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p` quantile (0..=1) of the kept values; exact while fewer than [`RESERVOIR`] came.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.kept.is_empty() {
            return 0;
        }
        let mut v = self.kept.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small() {
        let mut s = Samples::default();
        for v in 1..=100 {
            s.push(v);
        }
        assert_eq!(s.count(), 100);
        assert_eq!(s.max(), 100);
        assert_eq!(s.mean(), 50.5);
        assert_eq!(s.percentile(0.99), 99);
        assert_eq!(s.percentile(0.5), 50);
    }

    #[test]
    fn merged_samples_are_exact_while_small() {
        let (mut a, mut b) = (Samples::default(), Samples::default());
        (1..=60).for_each(|v| a.push(v));
        (61..=100).for_each(|v| b.push(v));
        a.merge(&b);
        assert_eq!((a.count(), a.max(), a.mean()), (100, 100, 50.5));
        assert_eq!(a.percentile(0.99), 99);
    }

    #[test]
    fn bounded_and_close_when_large() {
        let mut s = Samples::default();
        let n = 1_000_000u64;
        for v in 0..n {
            s.push(v);
        }
        assert_eq!(s.kept.len(), RESERVOIR);
        assert_eq!(s.count(), n);
        assert_eq!(s.max(), n - 1);
        let p99 = s.percentile(0.99) as f64;
        assert!((p99 / (0.99 * n as f64) - 1.0).abs() < 0.01, "p99 {p99}");
    }
}
