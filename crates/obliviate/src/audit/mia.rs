//! Membership-inference attacks on forgotten samples versus held-out test samples.
//!
//! (a) The loss attack of the NeurIPS 2023 machine-unlearning kit: a logistic regression on the
//! per-sample cross-entropy loss, forgotten samples (label "member") against an equal number of
//! test samples ("non-member"), scored by k-fold cross-validation. (b) The same attack on the
//! probability given to the true class (a confidence attack). AUC 0.5 = no membership signal.

use serde::Serialize;

use super::Outputs;
use super::stats::{auc, logistic_fit, roc};
use crate::data::split::{mix, shuffle};

/// One attack's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    /// Area under the ROC curve of the cross-validated attack scores.
    pub auc: f64,
    /// Cross-validated accuracy of the attack's member / non-member decision.
    pub accuracy: f64,
    /// ROC points (false-positive rate, true-positive rate).
    pub roc: Vec<(f64, f64)>,
}

/// Both attacks against one model.
#[derive(Debug, Clone, Serialize)]
pub struct MiaReport {
    /// Loss-threshold logistic regression.
    pub loss: AttackResult,
    /// True-class confidence logistic regression.
    pub confidence: AttackResult,
    /// Forgotten samples used.
    pub members: usize,
    /// Test samples used.
    pub non_members: usize,
}

/// k-fold cross-validated logistic regression on one feature (its accuracy), plus the AUC and
/// ROC of the feature oriented so that a larger `score` means "member". AUCs of
/// cross-validated scores are biased below 0.5 on small null samples; the oriented feature gives
/// the standard threshold-attack AUC.
fn cv_attack(x: &[f64], score: &[f64], y: &[bool], seed: u64) -> AttackResult {
    let n = x.len();
    let k = n.clamp(2, 5);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, seed);
    let mut correct = 0usize;
    for fold in 0..k {
        let test: Vec<usize> = order.iter().copied().skip(fold).step_by(k).collect();
        let train: Vec<usize> = order
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| i % k != fold)
            .map(|(_, v)| v)
            .collect();
        let (w, b, mean, std) = logistic_fit(
            &train.iter().map(|&i| x[i]).collect::<Vec<_>>(),
            &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        );
        for &i in &test {
            let s = w * (x[i] - mean) / std + b;
            if (s > 0.0) == y[i] {
                correct += 1;
            }
        }
    }
    let pos: Vec<f64> = (0..n).filter(|&i| y[i]).map(|i| score[i]).collect();
    let neg: Vec<f64> = (0..n).filter(|&i| !y[i]).map(|i| score[i]).collect();
    AttackResult {
        auc: auc(&pos, &neg),
        accuracy: correct as f64 / n.max(1) as f64,
        roc: roc(&pos, &neg),
    }
}

/// Runs both attacks; `forget` holds the forgotten samples' outputs, `test` held-out outputs.
/// The larger group is subsampled (seeded) so both have the same size.
pub fn mia(forget: &Outputs, test: &Outputs, seed: u64) -> MiaReport {
    let m = forget.len().min(test.len());
    let pick = |o: &Outputs, salt: u64| {
        let mut idx: Vec<usize> = (0..o.len()).collect();
        shuffle(&mut idx, mix(seed ^ salt));
        idx.truncate(m);
        idx
    };
    let (fi, ti) = (pick(forget, 1), pick(test, 2));
    let y: Vec<bool> = fi
        .iter()
        .map(|_| true)
        .chain(ti.iter().map(|_| false))
        .collect();
    let loss: Vec<f64> = fi
        .iter()
        .map(|&i| forget.loss(i))
        .chain(ti.iter().map(|&i| test.loss(i)))
        .collect();
    let conf: Vec<f64> = fi
        .iter()
        .map(|&i| forget.confidence(i))
        .chain(ti.iter().map(|&i| test.confidence(i)))
        .collect();
    MiaReport {
        loss: cv_attack(
            &loss,
            &loss.iter().map(|l| -l).collect::<Vec<_>>(),
            &y,
            seed,
        ),
        confidence: cv_attack(&conf, &conf, &y, seed ^ 7),
        members: m,
        non_members: m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outs(conf: &[f32]) -> Outputs {
        Outputs {
            classes: 2,
            probs: conf.iter().flat_map(|&c| [c, 1.0 - c]).collect(),
            labels: vec![0; conf.len()],
        }
    }

    #[test]
    fn separable_members_are_detected_and_identical_groups_are_not() {
        let members = outs(&[0.99, 0.98, 0.97, 0.995, 0.99, 0.985, 0.96, 0.99, 0.97, 0.98]);
        let others = outs(&[
            0.5, 0.4, 0.6, 0.55, 0.3, 0.45, 0.52, 0.6, 0.35, 0.5, 0.4, 0.42,
        ]);
        let r = mia(&members, &others, 1);
        assert_eq!(r.members, 10);
        assert!(r.loss.auc > 0.95 && r.loss.accuracy > 0.9, "{r:?}");
        assert!(r.confidence.auc > 0.95, "{r:?}");
        let same = mia(&others, &others, 1);
        assert_eq!(same.loss.auc, 0.5, "{same:?}");
        assert_eq!(same.confidence.auc, 0.5, "{same:?}");
    }
}
