//! When iterations are due and how many VUs run, as pure functions of the time since a scenario
//! started — what the executors follow, and what the tests check without a clock.
//!
//! Arrival-rate executors are *open*: iteration `n` is due at [`Arrivals::due`]`(n)` whatever
//! happened to the iterations before it, and its latency is measured from that moment, so a
//! stalled server shows its stall instead of slowing the test down (coordinated omission).

use std::time::Duration;

/// One stage of a ramping executor: reach `target` (iterations per second, or VUs) linearly over
/// `duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// The rate or VU count at its end.
    pub target: f64,
}

/// The arrival schedule of an arrival-rate executor.
#[derive(Clone, Debug, PartialEq)]
pub enum Arrivals {
    /// `rate` iterations per second for `duration`.
    Constant {
        /// Iterations per second.
        rate: f64,
        /// How long.
        duration: Duration,
    },
    /// From `start_rate`, each stage moving the rate linearly to its target.
    Ramping {
        /// Iterations per second at the start.
        start_rate: f64,
        /// The stages, in order.
        stages: Vec<Stage>,
    },
}

impl Arrivals {
    /// How long the schedule lasts.
    pub fn total(&self) -> Duration {
        match self {
            Arrivals::Constant { duration, .. } => *duration,
            Arrivals::Ramping { stages, .. } => stages.iter().map(|s| s.duration).sum(),
        }
    }

    /// When iteration `n` (from 0) is due, counted from the scenario's start: the moment the
    /// iterations due so far — the integral of the rate — reach `n`. `None` once the schedule
    /// ends first.
    pub fn due(&self, n: u64) -> Option<Duration> {
        let n = n as f64;
        match self {
            Arrivals::Constant { rate, duration } => {
                if *rate <= 0.0 {
                    return None;
                }
                let at = n / rate;
                (at < duration.as_secs_f64()).then(|| Duration::from_secs_f64(at))
            }
            Arrivals::Ramping { start_rate, stages } => {
                let (mut from, mut elapsed, mut done) = (start_rate.max(0.0), 0.0f64, 0.0f64);
                for stage in stages {
                    let length = stage.duration.as_secs_f64();
                    let to = stage.target.max(0.0);
                    let in_stage = (from + to) / 2.0 * length;
                    if done + in_stage > n || (n == 0.0 && (from > 0.0 || to > 0.0)) {
                        let need = n - done;
                        let at = time_to(need, from, to, length)?;
                        return Some(Duration::from_secs_f64(elapsed + at));
                    }
                    done += in_stage;
                    elapsed += length;
                    from = to;
                }
                None
            }
        }
    }
}

/// The time into a stage whose rate goes linearly from `from` to `to` over `length` seconds at
/// which `need` iterations (≥ 0) have become due; `None` if they never do within it.
fn time_to(need: f64, from: f64, to: f64, length: f64) -> Option<f64> {
    if need <= 0.0 {
        return Some(0.0);
    }
    if length <= 0.0 {
        return None;
    }
    let slope = (to - from) / length;
    let at = if slope.abs() < 1e-12 {
        if from <= 0.0 {
            return None;
        }
        need / from
    } else {
        // from·t + slope·t²/2 = need
        let discriminant = from * from + 2.0 * slope * need;
        if discriminant < 0.0 {
            return None;
        }
        (discriminant.sqrt() - from) / slope
    };
    (at.is_finite() && at >= 0.0 && at <= length * (1.0 + 1e-9)).then_some(at.min(length))
}

/// The VU count of a ramping-VUs executor at `elapsed` into it: linear between stage targets,
/// rounded down; `None` once its stages are over.
pub fn ramping_vus(start_vus: u32, stages: &[Stage], elapsed: Duration) -> Option<u32> {
    let mut from = f64::from(start_vus);
    let mut left = elapsed.as_secs_f64();
    for stage in stages {
        let length = stage.duration.as_secs_f64();
        if left < length {
            let share = if length > 0.0 { left / length } else { 1.0 };
            let vus = from + (stage.target - from) * share;
            return Some(vus.max(0.0).floor() as u32);
        }
        left -= length;
        from = stage.target;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced_and_ends() {
        let a = Arrivals::Constant {
            rate: 4.0,
            duration: secs(1.0),
        };
        let due: Vec<Option<Duration>> = (0..5).map(|n| a.due(n)).collect();
        assert_eq!(
            due,
            vec![
                Some(secs(0.0)),
                Some(secs(0.25)),
                Some(secs(0.5)),
                Some(secs(0.75)),
                None
            ]
        );
    }

    #[test]
    fn a_ramp_follows_the_integral_of_its_rate() {
        // 0 → 10/s over 2 s (10 iterations), then 10/s for 1 s (10 more).
        let a = Arrivals::Ramping {
            start_rate: 0.0,
            stages: vec![
                Stage {
                    duration: secs(2.0),
                    target: 10.0,
                },
                Stage {
                    duration: secs(1.0),
                    target: 10.0,
                },
            ],
        };
        assert_eq!(a.total(), secs(3.0));
        // Rate 5t: N(t) = 2.5t², so iteration 10 lands at t = 2.
        let at = |n| a.due(n).map(|d| d.as_secs_f64());
        assert!((at(10).unwrap_or(f64::NAN) - 2.0).abs() < 1e-6);
        assert!((at(15).unwrap_or(f64::NAN) - 2.5).abs() < 1e-6);
        assert!((at(1).unwrap_or(f64::NAN) - (0.4f64).sqrt()).abs() < 1e-6);
        assert_eq!(a.due(20), None);
    }

    #[test]
    fn ramping_vus_interpolate() {
        let stages = [
            Stage {
                duration: secs(10.0),
                target: 10.0,
            },
            Stage {
                duration: secs(10.0),
                target: 0.0,
            },
        ];
        assert_eq!(ramping_vus(0, &stages, secs(0.0)), Some(0));
        assert_eq!(ramping_vus(0, &stages, secs(5.0)), Some(5));
        assert_eq!(ramping_vus(0, &stages, secs(15.0)), Some(5));
        assert_eq!(ramping_vus(0, &stages, secs(20.0)), None);
    }

    proptest! {
        /// Iterations are due in order, and as many fall within the schedule as its rate's
        /// integral says (within one).
        #[test]
        fn ramps_are_ordered_and_count_their_integral(
            start in 0.0f64..50.0,
            targets in proptest::collection::vec((0.1f64..3.0, 0.0f64..50.0), 1..4),
        ) {
            let stages: Vec<Stage> = targets
                .iter()
                .map(|(d, t)| Stage { duration: secs(*d), target: *t })
                .collect();
            let mut expected = 0.0;
            let mut from = start;
            for s in &stages {
                expected += (from + s.target) / 2.0 * s.duration.as_secs_f64();
                from = s.target;
            }
            let a = Arrivals::Ramping { start_rate: start, stages };
            let mut last = Duration::ZERO;
            let mut count = 0u64;
            while let Some(at) = a.due(count) {
                prop_assert!(at >= last, "iteration {count} due before the one before it");
                prop_assert!(at <= a.total());
                last = at;
                count += 1;
                prop_assert!(count < 10_000);
            }
            prop_assert!((count as f64 - expected).abs() <= 1.0 + 1e-6,
                "{count} iterations for an integral of {expected}");
        }
    }
}
