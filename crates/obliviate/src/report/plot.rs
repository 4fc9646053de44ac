//! Figures (plotters; PNG or SVG by file extension) with a bundled font, so they render the same
//! on a machine without any system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::chain::ledger::{PowerLaw, Request, Segment, StopReason};
use crate::error::{Error, Result};
use crate::store::atomic;
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

type Drawn = std::result::Result<(), String>;

/// The image formats figures are written in, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.png`.
    Png,
    /// `.svg`.
    Svg,
}

impl Format {
    /// The format `path`'s extension names; any other extension is refused, so a figure is
    /// never written under a name that claims something else.
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(crate::error::invalid(
                "figure path",
                format!("{}: the name must end in .png or .svg", path.display()),
            )),
        }
    }
}

/// Renders `draw` to `path` (PNG or SVG by extension) atomically: the figure appears whole
/// or not at all.
fn render(
    path: &Path,
    size: (u32, u32),
    png: &dyn Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
    svg: &dyn Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
) -> Result<()> {
    register();
    match Format::of(path)? {
        Format::Png => {
            // plotters picks the encoder by extension, so the temporary keeps `.png`.
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = path.with_file_name(format!(".{name}.tmp.png"));
            let drawn = {
                let root = BitMapBackend::new(&tmp, size).into_drawing_area();
                png(&root).and_then(|_| root.present().map_err(|e| e.to_string()))
            };
            if let Err(e) = drawn {
                let _ = std::fs::remove_file(&tmp);
                return Err(render_err(path, e));
            }
            atomic::persist(&tmp, path)
        }
        Format::Svg => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
                svg(&root)
                    .and_then(|_| root.present().map_err(|e| e.to_string()))
                    .map_err(|e| render_err(path, e))?;
            }
            atomic::write_file(path, text.as_bytes())
        }
    }
}

/// What a residual-memory chart shows: one request's series, fit and blocks.
#[derive(Debug, Clone)]
pub struct ResidualSeries {
    /// Request number.
    pub request: u64,
    /// Ids in the request.
    pub ids: usize,
    /// d.
    pub first_block: usize,
    /// L.
    pub last_block: usize,
    /// s.
    pub stop_block: usize,
    /// (k, r_k) of every retrained block, one run per segment.
    pub segments: Vec<Vec<(usize, f64)>>,
    /// Fit at the stop, if any (fitted to residual / `scale`, x = k − `fit_from`).
    pub fit: Option<PowerLaw>,
    /// The block the fit's x counts from.
    pub fit_from: usize,
    /// Rule that stopped retraining.
    pub stop_rule: StopReason,
    /// Parameter count the fit was normalised by.
    pub scale: f64,
}

/// The (k, r_k) runs of `segments`, or of one span from `first` when a row predates segments.
fn runs(segments: &[Segment], first: usize, residuals: &[f64]) -> Vec<Vec<(usize, f64)>> {
    if segments.is_empty() {
        return vec![
            residuals
                .iter()
                .enumerate()
                .map(|(i, &r)| (first + i, r))
                .collect(),
        ];
    }
    segments
        .iter()
        .map(|s| {
            s.residuals
                .iter()
                .enumerate()
                .map(|(i, &r)| (s.first_block + i, r))
                .collect()
        })
        .collect()
}

impl ResidualSeries {
    /// From a fresh forget report.
    pub fn from_report(r: &ForgetReport, scale: f64) -> Self {
        Self::from_request(
            &Request {
                id: r.request,
                generation: 0,
                created_unix: 0,
                ids: r.ids.clone(),
                first_block: r.first_block,
                last_block: r.last_block,
                stop_block: r.stop_block,
                residuals_l1: r.residuals.clone(),
                residuals_l2: Vec::new(),
                fit: r.fit,
                stop_rule: r.stop_rule,
                segments: r.segments.clone(),
                seconds: r.seconds,
                test_accuracy: r.test_accuracy,
                model_sha256: String::new(),
                model_before_sha256: String::new(),
            },
            scale,
        )
    }
    /// From a ledger row.
    pub fn from_request(r: &Request, scale: f64) -> Self {
        ResidualSeries {
            request: r.id,
            ids: r.ids.len(),
            first_block: r.first_block,
            last_block: r.last_block,
            stop_block: r.stop_block,
            segments: runs(&r.segments, r.first_block, &r.residuals_l1),
            fit: r.fit,
            // Rows before segments fitted from the first affected block.
            fit_from: r.segments.last().map_or(r.first_block, |s| s.last_affected),
            stop_rule: r.stop_rule,
            scale,
        }
    }
}

/// Residual memory r_k against block k, the fitted power law and the stop block.
pub fn residuals(path: &Path, r: &ResidualSeries) -> Result<()> {
    render(path, (900, 540), &|a| draw_residuals(a, r), &|a| {
        draw_residuals(a, r)
    })
}

/// Draws the residual chart of one request on any plotters backend.
pub fn draw_residuals<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &ResidualSeries,
) -> Drawn {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let d = r.first_block as f64;
    let runs: Vec<Vec<(f64, f64)>> = r
        .segments
        .iter()
        .map(|run| run.iter().map(|&(k, y)| (k as f64, y)).collect())
        .collect();
    let ymax = runs
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1e-12)
        * 1.1;
    let x0 = d - 0.5;
    let x1 = (r.stop_block as f64 + 0.5).max(x0 + 1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Residual memory, request {} ({} id(s), stop at block {}, {} rule)",
                r.request, r.ids, r.stop_block, r.stop_rule
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
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (i, pts) in runs.iter().enumerate() {
        let series = chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(e)?;
        if i == 0 {
            series
                .label(format!("residual r_k ({} segment(s))", runs.len()))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(e)?;
    }
    if let Some(f) = r.fit {
        // The fit uses x = k − fit_from, on residuals divided by the parameter count.
        let from = r.fit_from as f64;
        let curve: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let k = from + 1.0 + (x1 - from - 1.0).max(0.0) * i as f64 / 200.0;
                let x = k - from;
                (k, ((f.a * x.powf(-f.h) + f.b) * r.scale).clamp(0.0, ymax))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(curve, RED.stroke_width(2)))
            .map_err(e)?
            .label(format!(
                "fit ({:.2e}·x^-{:.2} + {:.2e}) × {:.0} params",
                f.a, f.h, f.b, r.scale
            ))
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

/// A line chart's content: title, axis names, named series and an optional y range.
pub struct Lines<'a> {
    /// Caption.
    pub title: &'a str,
    /// x axis.
    pub x_desc: &'a str,
    /// y axis.
    pub y_desc: &'a str,
    /// `(label, points)` per series.
    pub series: &'a [(String, Vec<(f64, f64)>)],
    /// Fixed y range, else fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// Line chart of named series; PNG or SVG by extension.
pub fn lines(path: &Path, c: &Lines<'_>) -> Result<()> {
    render(path, (800, 500), &|a| draw_lines(a, c), &|a| {
        draw_lines(a, c)
    })
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Lines<'_>) -> Drawn {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in c.series.iter().flat_map(|s| s.1.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x0 -= 0.5;
        x1 = x0 + 1.0;
    }
    let (y0, y1) = c.y_range.unwrap_or_else(|| {
        let pad = ((y1 - y0) * 0.1).max(1e-3);
        (y0 - pad, y1 + pad)
    });
    let mut chart = ChartBuilder::on(root)
        .caption(c.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (i, (label, pts)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if pts.len() <= 60 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    Ok(())
}
