//! On-the-fly termination: has the residual memory of a segment decayed enough to stop
//! retraining it?
//!
//! The rule looks at one segment's residuals r_k = ‖δ_k − δ'_k‖₁ after its last affected block
//! L. What the removed samples put into the model shows as the excess of r_L over the level
//! the series settles at (the fitted plateau b: the retrained trajectory never returns exactly
//! to the stored one, so some residual remains whatever is retrained). Memory has decayed when
//! the latest residuals' excess over b is a small share ε of r_L's. The threshold is a ratio, so
//! it means the same for every model, dataset and scale; a series that is flat at r_L's level or
//! rising has no decayed excess and never stops this way.

use super::fit::fit_power_law;
use crate::chain::ledger::{PowerLaw, StopReason};

/// The termination rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// Fit y = a·x^(−h) + b to the residuals after the segment's last affected block L
    /// (x = 1 at L + 1) and stop when the latest residuals' excess over b is below
    /// `epsilon` × r_L's excess over b — provided the series is not rising and r_L stands
    /// clear of the residuals' noise around the fit. ε = 0 never stops early.
    Fit {
        /// Largest share of r_L's excess that may remain.
        epsilon: f64,
    },
    /// Stop when r_k / r_first < ρ (the segment's first residual), once past L.
    Relative {
        /// Ratio threshold ρ.
        rho: f64,
    },
}

/// Outcome of checking the rule after a block.
#[derive(Debug, Clone, Copy)]
pub struct StopDecision {
    /// Stop now.
    pub stop: bool,
    /// The fit, when the fit rule computed one (per parameter: residuals / parameter count).
    pub fit: Option<PowerLaw>,
    /// The rule that decided (`End` while no rule has fired).
    pub rule: StopReason,
}

/// One segment's residual series, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// r of every block retrained in the segment, in order (r[0] = the segment's first block).
    pub all: &'a [f64],
    /// How many of `all` come after the segment's last affected block L (the rest end at L).
    pub after: usize,
}

/// Applies `rule` to a segment's residuals, requiring `min_points` residuals after L. `scale`
/// (the model's parameter count) only scales the reported fit: the decision is a ratio.
pub fn decide(rule: &StopRule, s: Series<'_>, min_points: usize, scale: f64) -> StopDecision {
    let not_yet = StopDecision {
        stop: false,
        fit: None,
        rule: StopReason::End,
    };
    let n = s.all.len();
    if s.after == 0 || s.after > n || s.after < min_points.max(1) {
        return not_yet;
    }
    match *rule {
        StopRule::Fit { epsilon } => {
            let after = &s.all[n - s.after..];
            // The residual of L itself: what the removed samples contributed.
            let at_l = s.all[n - s.after - 1..n - s.after]
                .first()
                .copied()
                .unwrap_or(after[0]);
            if after.len() < 4 {
                return not_yet;
            }
            let scale = if scale > 0.0 { scale } else { 1.0 };
            let y: Vec<f64> = after.iter().map(|v| v / scale).collect();
            let x: Vec<f64> = (1..=y.len()).map(|i| i as f64).collect();
            let fit = fit_power_law(&x, &y);
            StopDecision {
                stop: decayed(&y, at_l / scale, &fit, epsilon),
                fit: Some(fit),
                rule: StopReason::Fit,
            }
        }
        StopRule::Relative { rho } => {
            let (first, last) = (s.all[0], s.all[n - 1]);
            let stop = if first > 0.0 {
                last / first < rho
            } else {
                last == 0.0
            };
            StopDecision {
                stop,
                fit: None,
                rule: StopReason::Relative,
            }
        }
    }
}

/// True when the excess of the latest residuals of `y` over the fit's plateau is at most
/// `epsilon` × the excess of `reference` (r_L), the series is not rising, and the reference's
/// excess stands clear of the noise around the fit.
fn decayed(y: &[f64], reference: f64, fit: &PowerLaw, epsilon: f64) -> bool {
    let n = y.len();
    if n < 4 || epsilon <= 0.0 || epsilon.is_nan() || y.iter().any(|v| !v.is_finite()) {
        return false;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let rising = mean(&y[n / 2..]) > mean(&y[..n / 2]);
    let noise = {
        let sse: f64 = y
            .iter()
            .enumerate()
            .map(|(i, v)| (fit.a * ((i + 1) as f64).powf(-fit.h) + fit.b - v).powi(2))
            .sum();
        (sse / (n as f64 - 3.0).max(1.0)).sqrt()
    };
    let excess_ref = reference - fit.b;
    let excess_now = mean(&y[n - 2..]) - fit.b;
    !rising && excess_ref > 3.0 * noise && excess_ref > 0.0 && excess_now <= epsilon * excess_ref
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit_rule(eps: f64) -> StopRule {
        StopRule::Fit { epsilon: eps }
    }

    /// r_L followed by `after`: the series a segment ending at L sees.
    fn decide_on(rule: StopRule, at_l: f64, after: &[f64]) -> StopDecision {
        let mut all = vec![at_l];
        all.extend_from_slice(after);
        decide(
            &rule,
            Series {
                all: &all,
                after: after.len(),
            },
            4,
            1.0,
        )
    }

    #[test]
    fn a_decaying_series_stops_once_its_excess_is_small() {
        // Power-law decay onto a plateau of 1.2 (the shape measured on full MNIST).
        let after: Vec<f64> = (1..=30)
            .map(|k| 8.0 * (k as f64).powf(-1.5) + 1.2)
            .collect();
        let stop_at = (4..=30)
            .find(|&n| decide_on(fit_rule(0.1), 9.8, &after[..n]).stop)
            .expect("stops");
        assert!((4..=12).contains(&stop_at), "{stop_at}");
        // A tighter ε waits longer; ε = 0 never stops.
        let later = (4..=30)
            .find(|&n| decide_on(fit_rule(0.02), 9.8, &after[..n]).stop)
            .unwrap_or(31);
        assert!(later > stop_at, "{later} vs {stop_at}");
        assert!(!decide_on(fit_rule(0.0), 9.8, &after).stop);
    }

    #[test]
    fn memory_lost_at_once_stops_at_the_first_chance() {
        let after = [0.31, 0.3, 0.29, 0.3];
        let d = decide_on(fit_rule(0.1), 9.8, &after);
        assert!(d.stop, "{d:?}");
    }

    #[test]
    fn flat_rising_noisy_or_nan_series_are_never_read_as_decayed() {
        let flat = [5.0; 20];
        assert!(!decide_on(fit_rule(0.1), 5.0, &flat).stop);
        let rising: Vec<f64> = (0..20).map(|k| 4.7 + k as f64).collect();
        assert!(!decide_on(fit_rule(0.1), 4.7, &rising).stop);
        let mut state = 3u64;
        let noisy: Vec<f64> = (0..30)
            .map(|_| {
                state = crate::data::split::mix(state);
                2.0 + (state % 1000) as f64 / 1000.0
            })
            .collect();
        assert!(!decide_on(fit_rule(0.1), 2.5, &noisy).stop);
        let with_nan = [3.0, 2.0, f64::NAN, 1.0, 1.0];
        assert!(!decide_on(fit_rule(0.1), 9.0, &with_nan).stop);
    }

    #[test]
    fn the_rule_waits_for_min_points_after_the_last_affected_block() {
        let after = [0.3, 0.3, 0.3, 0.3, 0.3];
        let all: Vec<f64> = [9.0, 9.0].iter().chain(&after).copied().collect();
        let s = |k: usize| Series {
            all: &all[..2 + k],
            after: k,
        };
        assert!(!decide(&fit_rule(0.1), s(3), 4, 1.0).stop);
        assert!(decide(&fit_rule(0.1), s(4), 4, 1.0).stop);
        assert!(!decide(&fit_rule(0.1), s(4), 5, 1.0).stop);
        assert!(!decide(&fit_rule(0.1), s(0), 1, 1.0).stop);
    }

    #[test]
    fn relative_rule() {
        let r = [4.0, 2.0, 1.0, 0.3];
        let at = |all: &[f64], rho| {
            decide(
                &StopRule::Relative { rho },
                Series { all, after: 1 },
                1,
                1.0,
            )
            .stop
        };
        assert!(at(&r, 0.1));
        assert!(!at(&r, 0.05));
        assert!(at(&[0.0, 0.0], 0.5));
    }
}
