//! Small statistics for audits: ROC/AUC and one-feature logistic regression.

/// Area under the ROC curve of `scores` for positives vs negatives (Mann–Whitney U, ties count
/// one half). 0.5 means the score cannot tell them apart.
pub fn auc(positives: &[f64], negatives: &[f64]) -> f64 {
    if positives.is_empty() || negatives.is_empty() {
        return 0.5;
    }
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of positive ranks with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (positives.len() as f64, negatives.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

/// ROC curve points (false-positive rate, true-positive rate), from the highest threshold down.
pub fn roc(positives: &[f64], negatives: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (np, nn) = (positives.len().max(1) as f64, negatives.len().max(1) as f64);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < all.len() {
        let t = all[i].0;
        while i < all.len() && all[i].0 == t {
            if all[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        out.push((fp / nn, tp / np));
    }
    out
}

/// Logistic regression on one feature, fitted by Newton's method with a small L2 penalty
/// (the feature is standardised first). Returns (weight, bias) on the standardised feature,
/// plus the standardisation (mean, std).
pub fn logistic_fit(x: &[f64], y: &[bool]) -> (f64, f64, f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-12);
    let z: Vec<f64> = x.iter().map(|v| (v - mean) / std).collect();
    let (mut w, mut b) = (0.0f64, 0.0f64);
    let lambda = 1e-3;
    for _ in 0..50 {
        let (mut gw, mut gb, mut hww, mut hwb, mut hbb) = (lambda * w, 0.0, lambda, 0.0, 1e-9);
        for (zi, &yi) in z.iter().zip(y) {
            let p = 1.0 / (1.0 + (-(w * zi + b)).exp());
            let r = p - if yi { 1.0 } else { 0.0 };
            gw += r * zi;
            gb += r;
            let s = p * (1.0 - p);
            hww += s * zi * zi;
            hwb += s * zi;
            hbb += s;
        }
        let det = hww * hbb - hwb * hwb;
        if det.abs() < 1e-300 || !det.is_finite() {
            break;
        }
        let dw = (hbb * gw - hwb * gb) / det;
        let db = (hww * gb - hwb * gw) / det;
        w -= dw;
        b -= db;
        if dw.abs() + db.abs() < 1e-10 || !w.is_finite() {
            break;
        }
    }
    if !w.is_finite() || !b.is_finite() {
        return (0.0, 0.0, mean, std);
    }
    (w, b, mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_definition() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0, 3.0], &[2.0, 4.0]), 0.25);
        assert_eq!(auc(&[2.0], &[2.0]), 0.5);
        assert_eq!(auc(&[], &[1.0]), 0.5);
        let r = roc(&[3.0, 4.0], &[1.0, 2.0]);
        assert_eq!(r.first(), Some(&(0.0, 0.0)));
        assert_eq!(r.last(), Some(&(1.0, 1.0)));
        assert!(r.contains(&(0.0, 1.0)));
    }

    #[test]
    fn logistic_regression_separates_and_survives_degenerate_input() {
        let x: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let y: Vec<bool> = (0..40).map(|i| i >= 20).collect();
        let (w, _, _, _) = logistic_fit(&x, &y);
        assert!(w > 1.0, "{w}");
        let (w, b, _, _) = logistic_fit(
            &[1.0; 10],
            &[
                true, false, true, false, true, false, true, false, true, false,
            ],
        );
        assert!(w.is_finite() && b.is_finite());
    }
}
