//! Residual-memory decay model: detrended fluctuation analysis and a bounded
//! Levenberg–Marquardt fit of y = a·x^(−h) + b.
//!
//! Hand-written rather than taken from an optimisation crate because the fit needs box
//! constraints (a ≥ 0, h ≥ 0) by projection, must never panic on flat, zero, tiny or noisy
//! series, and is three parameters: a 3×3 normal-equation solve is the whole linear algebra.

use crate::chain::ledger::PowerLaw;

/// Smallest seed exponent the fit starts from.
pub const H_FLOOR: f64 = 0.1;

/// First-order DFA exponent of `y` (50 % overlapping windows, least-squares slope of
/// log F(n) against log n). `None` when the series is too short (< 8 points) or flat.
pub fn dfa(y: &[f64]) -> Option<f64> {
    let n = y.len();
    if n < 8 || y.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let mut profile = Vec::with_capacity(n);
    let mut acc = 0.0;
    for v in y {
        acc += v - mean;
        profile.push(acc);
    }
    let mut pts = Vec::new();
    let mut s = 4usize;
    while s <= n / 2 {
        let step = (s / 2).max(1);
        let mut sq = 0.0;
        let mut count = 0usize;
        let mut start = 0;
        while start + s <= n {
            sq += detrended_sq(&profile[start..start + s]);
            count += s;
            start += step;
        }
        let f = (sq / count as f64).sqrt();
        if f > 0.0 && f.is_finite() {
            pts.push(((s as f64).ln(), f.ln()));
        }
        s = ((s as f64) * 1.25).ceil() as usize;
    }
    if pts.len() < 2 {
        return None;
    }
    let (slope, _) = line(&pts)?;
    slope.is_finite().then_some(slope)
}

/// Sum of squared residuals of `seg` around its least-squares line.
fn detrended_sq(seg: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = seg
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64, v))
        .collect();
    match line(&pts) {
        Some((m, c)) => pts.iter().map(|(x, y)| (y - (m * x + c)).powi(2)).sum(),
        None => 0.0,
    }
}

/// Least-squares line through points: (slope, intercept).
fn line(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    let sx: f64 = pts.iter().map(|p| p.0).sum();
    let sy: f64 = pts.iter().map(|p| p.1).sum();
    let sxx: f64 = pts.iter().map(|p| p.0 * p.0).sum();
    let sxy: f64 = pts.iter().map(|p| p.0 * p.1).sum();
    let den = n * sxx - sx * sx;
    if den.abs() < 1e-300 {
        return None;
    }
    let m = (n * sxy - sx * sy) / den;
    Some((m, (sy - m * sx) / n))
}

fn sse(x: &[f64], y: &[f64], p: &PowerLaw) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&x, &y)| (p.a * x.powf(-p.h) + p.b - y).powi(2))
        .sum()
}

/// Best a ≥ 0 and b for a fixed h (linear least squares in a and b).
fn linear_ab(x: &[f64], y: &[f64], h: f64) -> PowerLaw {
    let pts: Vec<(f64, f64)> = x.iter().zip(y).map(|(&x, &y)| (x.powf(-h), y)).collect();
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    match line(&pts) {
        Some((a, b)) if a >= 0.0 && a.is_finite() && b.is_finite() => PowerLaw { a, b, h },
        _ => PowerLaw { a: 0.0, b: mean, h },
    }
}

/// Fits y = a·x^(−h) + b with a ≥ 0, h ≥ 0, starting from h = max(DFA(y), 0.1).
/// Always returns finite parameters; a flat series gives a = 0.
pub fn fit_power_law(x: &[f64], y: &[f64]) -> PowerLaw {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mean = if n == 0 {
        0.0
    } else {
        y.iter().sum::<f64>() / n as f64
    };
    if n < 3 || x.iter().chain(y).any(|v| !v.is_finite()) || x.iter().any(|&v| v <= 0.0) {
        return PowerLaw {
            a: 0.0,
            b: if mean.is_finite() { mean } else { 0.0 },
            h: H_FLOOR,
        };
    }
    let h0 = dfa(y).unwrap_or(1.0).max(H_FLOOR);
    let mut p = linear_ab(x, y, h0);
    let mut cost = sse(x, y, &p);
    let mut lambda = 1e-3;
    for _ in 0..200 {
        // Jacobian columns for (a, h, b) and residuals.
        let mut jtj = [[0.0f64; 3]; 3];
        let mut jtr = [0.0f64; 3];
        for (&xi, &yi) in x.iter().zip(y) {
            let xp = xi.powf(-p.h);
            let j = [xp, -p.a * xi.ln() * xp, 1.0];
            let r = yi - (p.a * xp + p.b);
            for u in 0..3 {
                jtr[u] += j[u] * r;
                for v in 0..3 {
                    jtj[u][v] += j[u] * j[v];
                }
            }
        }
        let mut improved = false;
        for _ in 0..30 {
            let mut m = jtj;
            for (u, row) in m.iter_mut().enumerate() {
                row[u] += lambda * (jtj[u][u].max(1e-12));
            }
            let Some(step) = solve3(m, jtr) else {
                lambda *= 10.0;
                continue;
            };
            let cand = PowerLaw {
                a: (p.a + step[0]).max(0.0),
                h: (p.h + step[1]).clamp(0.0, 50.0),
                b: p.b + step[2],
            };
            let c = sse(x, y, &cand);
            if c.is_finite() && c < cost {
                let rel = (cost - c) / cost.max(1e-300);
                p = cand;
                cost = c;
                lambda = (lambda / 10.0).max(1e-12);
                improved = rel > 1e-12;
                break;
            }
            lambda *= 10.0;
            if lambda > 1e12 {
                break;
            }
        }
        if !improved {
            break;
        }
    }
    if ![p.a, p.b, p.h].iter().all(|v| v.is_finite()) {
        return PowerLaw {
            a: 0.0,
            b: mean,
            h: H_FLOOR,
        };
    }
    p
}

/// |dy/dx| of the fitted curve at x.
pub fn slope_at(p: &PowerLaw, x: f64) -> f64 {
    (p.a * p.h * x.powf(-p.h - 1.0)).abs()
}

fn solve3(m: [[f64; 3]; 3], r: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut mc = m;
        for row in 0..3 {
            mc[row][c] = r[row];
        }
        *o = det(&mc) / d;
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xs(n: usize) -> Vec<f64> {
        (1..=n).map(|i| i as f64).collect()
    }

    #[test]
    fn recovers_a_clean_power_law() {
        let x = xs(40);
        let y: Vec<f64> = x.iter().map(|x| 3.0 * x.powf(-0.8) + 0.5).collect();
        let p = fit_power_law(&x, &y);
        assert!((p.a - 3.0).abs() < 1e-3, "{p:?}");
        assert!((p.h - 0.8).abs() < 1e-3, "{p:?}");
        assert!((p.b - 0.5).abs() < 1e-3, "{p:?}");
        assert!(slope_at(&p, 40.0) < slope_at(&p, 2.0));
    }

    #[test]
    fn flat_zero_short_and_nan_series_do_not_panic() {
        let x = xs(20);
        let flat = fit_power_law(&x, &[2.0; 20]);
        assert!(
            flat.a.abs() < 1e-9 && (flat.b - 2.0).abs() < 1e-9,
            "{flat:?}"
        );
        let zero = fit_power_law(&x, &[0.0; 20]);
        assert_eq!(slope_at(&zero, 20.0), 0.0);
        let short = fit_power_law(&x[..2], &[1.0, 0.5]);
        assert!(short.a == 0.0 && short.b.is_finite());
        let nan = fit_power_law(&x[..4], &[1.0, f64::NAN, 0.3, 0.2]);
        assert!(nan.a.is_finite() && nan.b.is_finite());
        assert!(fit_power_law(&[], &[]).b == 0.0);
    }

    #[test]
    fn noisy_series_gives_bounded_parameters() {
        let x = xs(60);
        let mut state = 7u64;
        let y: Vec<f64> = x
            .iter()
            .map(|x| {
                state = crate::data::split::mix(state);
                let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                5.0 * x.powf(-1.2) + 0.1 + 0.2 * noise
            })
            .collect();
        let p = fit_power_law(&x, &y);
        assert!(
            p.a >= 0.0 && p.h >= 0.0 && p.a.is_finite() && p.h.is_finite(),
            "{p:?}"
        );
        assert!((p.h - 1.2).abs() < 0.6, "{p:?}");
    }

    #[test]
    fn dfa_distinguishes_noise_from_random_walk() {
        let mut state = 11u64;
        let noise: Vec<f64> = (0..512)
            .map(|_| {
                state = crate::data::split::mix(state);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let walk: Vec<f64> = noise
            .iter()
            .scan(0.0, |s, v| {
                *s += v;
                Some(*s)
            })
            .collect();
        let a_noise = dfa(&noise).unwrap();
        let a_walk = dfa(&walk).unwrap();
        assert!((a_noise - 0.5).abs() < 0.15, "white noise α = {a_noise}");
        assert!((a_walk - 1.5).abs() < 0.2, "random walk α = {a_walk}");
        assert!(dfa(&[1.0; 5]).is_none());
        assert!(dfa(&[3.0; 40]).is_none());
    }
}
