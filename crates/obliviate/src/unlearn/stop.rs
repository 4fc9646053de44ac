//! On-the-fly termination: when has the residual memory decayed enough to stop retraining?

use super::fit::{fit_power_law, slope_at};
use crate::chain::ledger::{PowerLaw, StopReason};

/// The termination rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// DeepObliviate's rule: fit y = a·x^(−h) + b to the residuals after the first affected
    /// block (x = 1 at block d+1), each divided by the model's parameter count, and stop when
    /// the fitted slope at the last point is below ε.
    Fit {
        /// Slope threshold ε.
        epsilon: f64,
    },
    /// Stop when r_k / r_d < ρ.
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
    /// The fit, when the fit rule computed one.
    pub fit: Option<PowerLaw>,
    /// The rule that decided (`End` while no rule has fired).
    pub rule: StopReason,
}

/// Applies `rule` to the residual series `r` (r[0] = r_d), requiring `min_points` residuals.
///
/// The fit rule works on the series divided by `scale`, the number of scalars in the model:
/// the mean absolute residual per parameter, so one ε means the same for LeNet-5 and ResNet-18.
pub fn decide(rule: &StopRule, r: &[f64], min_points: usize, scale: f64) -> StopDecision {
    let not_yet = StopDecision {
        stop: false,
        fit: None,
        rule: StopReason::End,
    };
    if r.len() < min_points.max(1) {
        return not_yet;
    }
    match *rule {
        StopRule::Fit { epsilon } => {
            if r.len() < 4 {
                return not_yet;
            }
            let scale = if scale > 0.0 { scale } else { 1.0 };
            let y: Vec<f64> = r[1..].iter().map(|v| v / scale).collect();
            let x: Vec<f64> = (1..=y.len()).map(|i| i as f64).collect();
            let fit = fit_power_law(&x, &y);
            let slope = slope_at(&fit, y.len() as f64);
            StopDecision {
                stop: slope < epsilon,
                fit: Some(fit),
                rule: StopReason::Fit,
            }
        }
        StopRule::Relative { rho } => {
            let first = r[0];
            let last = r[r.len() - 1];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_rule_waits_for_min_points_then_stops_on_decay() {
        let r: Vec<f64> = (1..=30).map(|k| 10.0 * (k as f64).powf(-2.0)).collect();
        let rule = StopRule::Fit { epsilon: 1e-2 };
        assert!(!decide(&rule, &r[..10], 15, 1.0).stop);
        let d = decide(&rule, &r, 15, 1.0);
        assert!(d.stop && d.fit.is_some(), "{d:?}");
        assert!(!decide(&StopRule::Fit { epsilon: 0.0 }, &r, 15, 1.0).stop);
    }

    #[test]
    fn relative_rule() {
        let r = [4.0, 2.0, 1.0, 0.3];
        assert!(decide(&StopRule::Relative { rho: 0.1 }, &r, 2, 1.0).stop);
        assert!(!decide(&StopRule::Relative { rho: 0.05 }, &r, 2, 1.0).stop);
        assert!(decide(&StopRule::Relative { rho: 0.5 }, &[0.0, 0.0], 1, 1.0).stop);
    }
}
