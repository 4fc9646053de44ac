//! On-the-fly termination: has the residual memory of a segment decayed enough to stop
//! retraining it?
//!
//! The rule looks at one segment's residuals r_k = ‖δ_k − δ'_k‖₁ after its last affected block
//! L, beside the stored increments' sizes ‖δ_k‖₁. Two things can end a segment:
//! - **decay**: the latest residuals are at most ε × r_L, the memory the removed samples put
//!   in at L (r_L is the residual of the block they were removed from);
//! - **negligible**: for `min_points` blocks in a row each residual is at most a share
//!   `negligible` (5 % by default) of the stored increment it compares with: stitching a stored
//!   increment instead of retraining it then changes that block's update by a few percent.
//!
//! Both are ratios, so the thresholds mean the same for every model, dataset and scale. They
//! are separate because they govern different requests: decay ends the segments of users and
//! blocks (large r_L), negligibility those of single ids (a residual of 0.5–2 % that never
//! decays); `bench calibrate` chooses ε. A residual that is
//! rising, or flat, at a large share of the increments (with a constant learning rate the
//! retrained trajectory drifts to the size of the updates) meets neither and never stops
//! early. Measured on full MNIST (lenet5, B = 1000, Adam 0.002 → ×0.05), a single id's residual
//! is 0.5–2 % of the increments, decays for ~10 blocks and then grows slowly with the chaotic
//! divergence of the two trajectories (to ~15 % after 80 blocks); forgetting a whole block of
//! 60 samples starts near 100 % and decays to a plateau of 12–15 % (ARCHITECTURE decision 5).

use super::fit::fit_power_law;
use crate::chain::ledger::{PowerLaw, StopReason};

/// The share of a stored increment under which a residual is negligible, by default: 5 %.
pub const NEGLIGIBLE: f64 = 0.05;

/// The termination rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// Stop a segment once, after its last affected block L, the latest residuals are at
    /// most ε × r_L (decay) or `min_points` residuals in a row are each at most `negligible`
    /// of their stored increment (negligible). ε = 0 never stops early. A power law
    /// y = a·x^(−h) + b is fitted to the residuals after L for the report.
    Fit {
        /// The largest share of r_L that may remain.
        epsilon: f64,
        /// The largest share of a stored increment a residual may be to count as negligible.
        negligible: f64,
    },
    /// Stop when r_k / r_first < ρ (the segment's first residual), once past L.
    Relative {
        /// Ratio threshold ρ.
        rho: f64,
    },
}

impl StopRule {
    /// The fit rule with threshold ε and the default [`NEGLIGIBLE`] share.
    pub fn fit(epsilon: f64) -> StopRule {
        StopRule::Fit {
            epsilon,
            negligible: NEGLIGIBLE,
        }
    }

    /// False for a threshold of 0, which never stops a segment before the chain's end.
    pub fn can_stop_early(&self) -> bool {
        match *self {
            StopRule::Fit { epsilon, .. } => epsilon > 0.0,
            StopRule::Relative { rho } => rho > 0.0,
        }
    }
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
    /// r of every block retrained in the segment, in order (`r[0]` = the segment's first block).
    pub all: &'a [f64],
    /// ‖δ_k‖₁ of the stored increment each residual compares with.
    pub norms: &'a [f64],
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
    if s.after == 0 || s.after > n || s.after < min_points.max(1) || s.norms.len() != n {
        return not_yet;
    }
    match *rule {
        StopRule::Fit {
            epsilon,
            negligible,
        } => {
            let (after, norms) = (&s.all[n - s.after..], &s.norms[n - s.after..]);
            // The residual of L itself: what the removed samples contributed.
            let at_l = if s.after < n {
                s.all[n - s.after - 1]
            } else {
                after[0]
            };
            let fit = (after.len() >= 4).then(|| {
                let scale = if scale > 0.0 { scale } else { 1.0 };
                let y: Vec<f64> = after.iter().map(|v| v / scale).collect();
                let x: Vec<f64> = (1..=y.len()).map(|i| i as f64).collect();
                fit_power_law(&x, &y)
            });
            let window = min_points.max(1).min(after.len());
            let decision = judge(at_l, after, norms, window, epsilon, negligible);
            StopDecision {
                stop: decision.is_some(),
                fit,
                rule: decision.unwrap_or(StopReason::End),
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

/// `Fit` when the latest residuals of `after` are at most ε × `at_l`, `Negligible` when the
/// last `window` residuals are each at most `negligible` of their increment (`norms`); `None`
/// while neither holds (and always for ε = 0 or a non-finite series).
fn judge(
    at_l: f64,
    after: &[f64],
    norms: &[f64],
    window: usize,
    epsilon: f64,
    negligible: f64,
) -> Option<StopReason> {
    let n = after.len();
    if n == 0 || epsilon <= 0.0 || epsilon.is_nan() {
        return None;
    }
    if after.iter().chain(norms).any(|v| !v.is_finite()) || !at_l.is_finite() {
        return None;
    }
    let latest = after[n.saturating_sub(2)..].iter().sum::<f64>() / n.min(2) as f64;
    if at_l > 0.0 && latest <= epsilon * at_l {
        return Some(StopReason::Fit);
    }
    let small = after[n - window..]
        .iter()
        .zip(&norms[n - window..])
        .all(|(r, d)| *d > 0.0 && r / d <= negligible);
    small.then_some(StopReason::Negligible)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ε with the negligible share the rule had before it was separate (ε/4).
    fn fit_rule(eps: f64) -> StopRule {
        StopRule::Fit {
            epsilon: eps,
            negligible: eps / 4.0,
        }
    }

    /// r_L followed by `after`, against increments of size `norm`: what a segment ending at L
    /// sees.
    fn decide_on(rule: StopRule, at_l: f64, after: &[f64], norm: f64) -> StopDecision {
        let mut all = vec![at_l];
        all.extend_from_slice(after);
        let norms = vec![norm; all.len()];
        decide(
            &rule,
            Series {
                all: &all,
                norms: &norms,
                after: after.len(),
            },
            4,
            1.0,
        )
    }

    /// The first number of residuals after L at which the rule stops, if any.
    fn stop_at(rule: StopRule, at_l: f64, after: &[f64], norm: f64) -> Option<usize> {
        (1..=after.len()).find(|&n| decide_on(rule, at_l, &after[..n], norm).stop)
    }

    #[test]
    fn a_block_removed_decays_onto_a_plateau_and_stops_by_decay() {
        // Forgetting a whole block (full MNIST): 9.8 at L, then 6.6, 4.0, 2.5, 2.3, 1.1–1.5.
        let after = [6.6, 4.0, 2.5, 2.3, 1.4, 1.2, 1.5, 1.1, 1.3, 1.2];
        let d = stop_at(fit_rule(0.2), 9.8, &after, 9.8);
        assert_eq!(d, Some(5));
        let r = decide_on(fit_rule(0.2), 9.8, &after[..5], 9.8);
        assert_eq!(r.rule, StopReason::Fit);
        assert!(r.fit.is_some());
        // A tighter ε waits longer; ε = 0 never stops.
        assert_eq!(stop_at(fit_rule(0.1), 9.8, &after, 9.8), None);
        assert_eq!(stop_at(fit_rule(0.0), 9.8, &after, 9.8), None);
    }

    #[test]
    fn a_single_id_is_negligible_next_to_the_increments() {
        // One id (full MNIST, block 705): r ≈ 0.2 → 0.05 against increments of ~10.
        let after = [0.181, 0.094, 0.091, 0.1, 0.081, 0.078];
        let r = decide_on(fit_rule(0.2), 0.199, &after[..4], 10.0);
        assert!(r.stop && r.rule == StopReason::Negligible, "{r:?}");
        assert_eq!(stop_at(fit_rule(0.2), 0.199, &after, 10.0), Some(4));
    }

    #[test]
    fn flat_rising_or_nan_series_at_the_size_of_the_increments_never_stop() {
        // A constant learning rate: the residual drifts up to the size of the updates.
        let rising: Vec<f64> = (0..40).map(|k| 4.7 + 0.5 * k as f64).collect();
        assert_eq!(stop_at(fit_rule(0.2), 4.7, &rising, 10.0), None);
        let flat = [5.0; 30];
        assert_eq!(stop_at(fit_rule(0.2), 5.0, &flat, 10.0), None);
        let with_nan = [3.0, 2.0, f64::NAN, 0.01, 0.01];
        assert_eq!(stop_at(fit_rule(0.2), 9.0, &with_nan, 10.0), None);
        // Zero-size increments give no ratio to judge by.
        assert_eq!(stop_at(fit_rule(0.2), 1.0, &[0.9; 10], 0.0), None);
    }

    #[test]
    fn the_rule_waits_for_min_points_after_the_last_affected_block() {
        let after = [0.01; 5];
        let all: Vec<f64> = [9.0, 9.0].iter().chain(&after).copied().collect();
        let norms = vec![10.0; all.len()];
        let s = |k: usize| Series {
            all: &all[..2 + k],
            norms: &norms[..2 + k],
            after: k,
        };
        assert!(!decide(&fit_rule(0.2), s(3), 4, 1.0).stop);
        assert!(decide(&fit_rule(0.2), s(4), 4, 1.0).stop);
        assert!(!decide(&fit_rule(0.2), s(4), 5, 1.0).stop);
        assert!(!decide(&fit_rule(0.2), s(0), 1, 1.0).stop);
    }

    #[test]
    fn relative_rule() {
        let r = [4.0, 2.0, 1.0, 0.3];
        let norms = [1.0; 4];
        let at = |all: &[f64], rho| {
            decide(
                &StopRule::Relative { rho },
                Series {
                    all,
                    norms: &norms[..all.len()],
                    after: 1,
                },
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
