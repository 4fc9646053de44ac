//! Residual-memory plots (plotters; PNG or SVG by file extension) with a bundled font, so
//! figures render the same on a machine without any system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::unlearn::ForgetReport;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register() {
    REGISTER.call_once(|| {
        // The bundled font is valid; failure would only mean text is not drawn.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn render_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Render {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Residual memory r_k against block k, the fitted power law and the stop block.
pub fn residuals(path: &Path, r: &ForgetReport) -> Result<()> {
    register();
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let result = if png {
        let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
        draw_residuals(&root, r).and_then(|_| root.present().map_err(|e| e.to_string()))
    } else {
        let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
        draw_residuals(&root, r).and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    result.map_err(|e| render_err(path, e))
}

/// Draws the residual chart of one request on any plotters backend.
pub fn draw_residuals<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &ForgetReport,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let d = r.first_block as f64;
    let pts: Vec<(f64, f64)> = r
        .residuals
        .iter()
        .enumerate()
        .map(|(i, &y)| (d + i as f64, y))
        .collect();
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-12) * 1.1;
    let x0 = d - 0.5;
    let x1 = (r.stop_block as f64 + 0.5).max(x0 + 1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Residual memory, request {} ({} id(s), stop at block {}, {} rule)",
                r.request,
                r.ids.len(),
                r.stop_block,
                r.stop_rule
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("block k")
        .y_desc("r_k = ||δ_k − δ'_k||₁")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
        .map_err(e)?
        .label("residual r_k")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(e)?;
    if let Some(f) = r.fit {
        // The fit uses x = k − d for blocks after d.
        let curve: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let k = d + 1.0 + (x1 - d - 1.0).max(0.0) * i as f64 / 200.0;
                let x = k - d;
                (k, (f.a * x.powf(-f.h) + f.b).clamp(0.0, ymax))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(curve, RED.stroke_width(2)))
            .map_err(e)?
            .label(format!("fit {:.3e}·x^-{:.2} + {:.3e}", f.a, f.h, f.b))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    let s = r.stop_block as f64;
    chart
        .draw_series(LineSeries::new(
            vec![(s, 0.0), (s, ymax)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label(format!("stop block s = {}", r.stop_block))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let l = r.last_block as f64;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(l, 0.0), (l, ymax)],
            6,
            4,
            GREEN.stroke_width(1),
        ))
        .map_err(e)?
        .label(format!("last affected block L = {}", r.last_block))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    Ok(())
}
