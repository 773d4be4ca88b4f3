//! Three plots of one set of predictions against outcomes, as PNG and SVG:
//! a reliability diagram, predicted vs actual time on log axes with the
//! 10–90 % band, and a histogram of each learner's prediction spread. Drawn
//! for `eval --plots` (a family on the hold-out) and `report --plots` (a
//! served version on live outcomes) alike.
//!
//! Text is drawn with DejaVu Sans from the `dejavu` crate through plotters'
//! `ab_glyph` rasteriser, so no system font or fontconfig is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use taskcast_learn::judge::metrics::{
    DEFAULT_ECE_BINS, STUCK_EPSILON, ece, interval_coverage, quantile,
};

/// What the plots are drawn from: the same rows the figures were computed on.
#[derive(Clone, Debug, Default)]
pub struct PlotData {
    /// Predicted p(correct), row by row.
    pub p: Vec<f64>,
    /// Outcomes, aligned with `p`.
    pub y: Vec<bool>,
    /// Rows with a time prediction and a recorded time.
    pub time: Vec<TimePoint>,
    /// Each learner's spread (max − min) of predictions, for learners with
    /// at least two.
    pub learner_spreads: Vec<f64>,
}

/// One row's time prediction against what was recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimePoint {
    /// Predicted median seconds.
    pub median: f64,
    /// Predicted 10th and 90th percentile, when stored.
    pub interval: Option<(f64, f64)>,
    /// Recorded seconds.
    pub actual: f64,
}

/// Pixel size of every plot (SVG uses the same user units).
pub const SIZE: (u32, u32) = (860, 600);

/// Points drawn at most in the time scatter; more rows are thinned evenly
/// (the band and the title's coverage still use every row).
pub const MAX_SCATTER_POINTS: usize = 800;

/// Bins of the time band, by quantile of the predicted median.
pub const TIME_BAND_BINS: usize = 20;

/// Bars of the per-learner spread histogram.
pub const SPREAD_HISTOGRAM_BARS: usize = 50;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The output directory could not be made.
    #[error("creating {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The bundled font did not parse (a broken build, not bad input).
    #[error("the bundled DejaVu Sans font could not be loaded")]
    Font,
    /// Drawing or encoding failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The file.
        path: String,
        /// Cause.
        message: String,
    },
}

/// Registers the bundled font once per process.
fn ensure_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// One equal-width bin of the reliability diagram (the same bins as [`ece`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReliabilityBin {
    /// Lower edge of the bin.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Rows in the bin.
    pub count: u64,
    /// Mean predicted p(correct) in the bin.
    pub mean_predicted: f64,
    /// Observed success rate in the bin.
    pub observed: f64,
}

/// The non-empty reliability bins of `p` against `y` (`bins` equal-width
/// bins over [0, 1]; p = 1 in the last bin, as [`ece`] bins them).
pub fn reliability_bins(p: &[f64], y: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut acc = vec![(0u64, 0.0f64, 0.0f64); bins];
    for (&pi, &yi) in p.iter().zip(y) {
        let b = ((pi.clamp(0.0, 1.0) * bins as f64).floor() as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += pi;
        acc[b].2 += if yi { 1.0 } else { 0.0 };
    }
    acc.into_iter()
        .enumerate()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(b, (n, sp, sy))| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: n,
            mean_predicted: sp / n as f64,
            observed: sy / n as f64,
        })
        .collect()
}

/// One point of the time band: at a predicted median, the typical 10th and
/// 90th percentile the model gave there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    /// Median of the predicted medians in the bin.
    pub median: f64,
    /// Median of the predicted 10th percentiles.
    pub low: f64,
    /// Median of the predicted 90th percentiles.
    pub high: f64,
}

/// The 10–90 % band as [`TIME_BAND_BINS`] quantile bins of the predicted
/// median, from the rows that carry an interval.
pub fn time_band(points: &[TimePoint]) -> Vec<BandPoint> {
    let mut with: Vec<(f64, f64, f64)> = points
        .iter()
        .filter_map(|t| t.interval.map(|(lo, hi)| (t.median, lo, hi)))
        .collect();
    if with.is_empty() {
        return Vec::new();
    }
    with.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bins = TIME_BAND_BINS.min(with.len());
    (0..bins)
        .filter_map(|b| {
            let part = &with[b * with.len() / bins..(b + 1) * with.len() / bins];
            let col = |f: fn(&(f64, f64, f64)) -> f64| -> Option<f64> {
                quantile(&part.iter().map(f).collect::<Vec<_>>(), 0.5)
            };
            Some(BandPoint {
                median: col(|t| t.0)?,
                low: col(|t| t.1)?,
                high: col(|t| t.2)?,
            })
        })
        .collect()
}

/// Histogram of per-learner spreads: `(lower edge, upper edge, learners)`
/// over [0, upper], where upper is the largest spread rounded up to 0.05
/// (at least 0.05, so a model whose learners never move still shows bars).
pub fn spread_histogram(spreads: &[f64]) -> Vec<(f64, f64, u64)> {
    let max = spreads
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .fold(0.0f64, f64::max);
    let upper = ((max / 0.05).ceil() * 0.05).clamp(0.05, 1.0);
    let width = upper / SPREAD_HISTOGRAM_BARS as f64;
    let mut counts = vec![0u64; SPREAD_HISTOGRAM_BARS];
    for &s in spreads.iter().filter(|s| s.is_finite()) {
        let b = ((s / width).floor() as usize).min(SPREAD_HISTOGRAM_BARS - 1);
        counts[b] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(b, n)| (b as f64 * width, (b + 1) as f64 * width, n))
        .collect()
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn title_style() -> TextStyle<'static> {
    TextStyle::from(("sans-serif", 22).into_font())
}

/// Draws the white background, the title and a line of figures above the
/// chart; returns the area left for the chart.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    root.fill(&WHITE).map_err(err)?;
    let area = root.titled(title, title_style()).map_err(err)?;
    area.titled(
        subtitle,
        ("sans-serif", 16).into_font().color(&BLACK.mix(0.75)),
    )
    .map_err(err)
}

/// The legend box, styled the same on every plot.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)
}

/// A message in place of a plot whose rows are missing, so the file set
/// stays the same and a reader sees why.
fn draw_message<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    message: &str,
) -> DrawResult {
    let area = titled(root, title, message)?;
    area.draw(&Text::new(
        "nothing to plot".to_owned(),
        (30, 200),
        ("sans-serif", 18).into_font().color(&BLACK.mix(0.7)),
    ))
    .map_err(err)?;
    Ok(())
}

fn draw_reliability<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    name: &str,
    data: &PlotData,
) -> DrawResult {
    let title = format!("{name}: predicted vs observed success");
    if data.p.is_empty() {
        return draw_message(root, &title, "no rows with a prediction");
    }
    let bins = reliability_bins(&data.p, &data.y, DEFAULT_ECE_BINS);
    let e = ece(&data.p, &data.y, DEFAULT_ECE_BINS).unwrap_or(f64::NAN);
    let area = titled(
        root,
        &title,
        &format!(
            "{} rows; expected calibration error {e:.3} (0 = predictions match outcomes)",
            data.p.len()
        ),
    )?;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("predicted p(correct), mean within each 0.1-wide bin")
        .y_desc("observed success rate in the bin")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(err)?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            bins.iter().map(|b| (b.mean_predicted, b.observed)),
            blue.stroke_width(2),
        ))
        .map_err(err)?
        .label("model (point = one bin, n = rows in it)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    let total = data.p.len() as f64;
    chart
        .draw_series(bins.iter().map(|b| {
            // Area proportional to the bin's share of rows, so a bin of three
            // rows does not look as trustworthy as one of three thousand.
            let r = (3.0 + 15.0 * (b.count as f64 / total).sqrt()) as i32;
            Circle::new((b.mean_predicted, b.observed), r, blue.filled())
        }))
        .map_err(err)?;
    chart
        .draw_series(bins.iter().map(|b| {
            // Beside the point, up and to the right, so the dot stays visible.
            EmptyElement::at((b.mean_predicted, b.observed))
                + Text::new(
                    format!("n={}", b.count),
                    (10, -18),
                    ("sans-serif", 13).into_font().color(&BLACK),
                )
        }))
        .map_err(err)?;
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn draw_time<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    name: &str,
    data: &PlotData,
) -> DrawResult {
    let title = format!("{name}: predicted vs actual time");
    if data.time.is_empty() {
        return draw_message(
            root,
            &title,
            "no rows with both a predicted and a recorded time",
        );
    }
    let band = time_band(&data.time);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let seen = data
        .time
        .iter()
        .flat_map(|t| [t.median, t.actual])
        .chain(band.iter().flat_map(|b| [b.low, b.high]));
    for v in seen {
        // Log axes: anything under a second is drawn at one second, as the
        // time metrics treat it.
        let v = v.max(1.0);
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let (lo, hi) = (lo * 0.8, (hi * 1.25).max(lo * 2.0));
    let (low, high, actual): (Vec<f64>, Vec<f64>, Vec<f64>) = data
        .time
        .iter()
        .filter_map(|t| t.interval.map(|(l, h)| (l, h, t.actual)))
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (l, h, x)| {
                a.push(l);
                b.push(h);
                c.push(x);
                (a, b, c)
            },
        );
    let coverage = interval_coverage(&low, &high, &actual).map_or_else(
        || "no stored interval".to_owned(),
        |c| format!("10-90% coverage {:.0}%", c * 100.0),
    );
    let area = titled(
        root,
        &title,
        &format!(
            "{} tasks with a recorded time; {coverage} (ideal: 80%)",
            data.time.len()
        ),
    )?;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("predicted median seconds (log scale)")
        .y_desc("actual seconds (log scale)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(BLACK.mix(0.05))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    let orange = RGBColor(255, 127, 14);
    if !band.is_empty() {
        let mut outline: Vec<(f64, f64)> = band
            .iter()
            .map(|b| (b.median.max(1.0), b.high.max(1.0)))
            .collect();
        outline.extend(
            band.iter()
                .rev()
                .map(|b| (b.median.max(1.0), b.low.max(1.0))),
        );
        chart
            .draw_series(std::iter::once(Polygon::new(outline, orange.mix(0.25))))
            .map_err(err)?
            .label("predicted 10-90% interval (median per 5% slice of predictions)")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], orange.mix(0.4).filled())
            });
    }
    let step = data.time.len().div_ceil(MAX_SCATTER_POINTS).max(1);
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(data.time.iter().step_by(step).map(|t| {
            Circle::new(
                (t.median.max(1.0), t.actual.max(1.0)),
                2,
                blue.mix(0.35).filled(),
            )
        }))
        .map_err(err)?
        .label(if step > 1 {
            format!("a task (every {step}th shown)")
        } else {
            "a task".to_owned()
        })
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, blue.filled()));
    chart
        .draw_series(LineSeries::new(
            [(lo, lo), (hi, hi)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(err)?
        .label("actual = predicted")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn draw_spread<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    name: &str,
    data: &PlotData,
) -> DrawResult {
    let title = format!("{name}: how far each learner's predictions move");
    if data.learner_spreads.is_empty() {
        return draw_message(root, &title, "no learners with a prediction");
    }
    let bars = spread_histogram(&data.learner_spreads);
    let stuck = data
        .learner_spreads
        .iter()
        .filter(|&&s| s < STUCK_EPSILON)
        .count();
    let upper = bars.last().map_or(1.0, |b| b.1);
    let top = (bars.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.1).ceil() as u64;
    let area = titled(
        root,
        &title,
        &format!(
            "{} learners; {stuck} of them with predictions spanning less than {STUCK_EPSILON} (stuck)",
            data.learner_spreads.len()
        ),
    )?;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..upper, 0u64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("spread of the learner's predicted p(correct): max - min over their tasks")
        .y_desc("learners")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    let green = RGBColor(44, 160, 44);
    chart
        .draw_series(
            bars.iter()
                .filter(|b| b.2 > 0)
                .map(|&(l, h, n)| Rectangle::new([(l, 0), (h, n)], green.mix(0.7).filled())),
        )
        .map_err(err)?
        .label("learners per bar")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], green.filled()));
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            [(STUCK_EPSILON, 0), (STUCK_EPSILON, top)],
            red.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!(
            "{STUCK_EPSILON}: below it, predictions do not move"
        ))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Writes an RGB buffer of [`SIZE`] as a PNG at the best compression.
fn encode_png(path: &Path, rgb: &[u8]) -> Result<(), String> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let file = std::fs::File::create(path).map_err(err)?;
    let mut out = std::io::BufWriter::new(file);
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
        .write_image(rgb, SIZE.0, SIZE.1, image::ColorType::Rgb8)
        .map_err(err)?;
    std::io::Write::flush(&mut out).map_err(err)
}

/// Which plot to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Reliability,
    Time,
    Spread,
}

impl Kind {
    fn stem(self) -> &'static str {
        match self {
            Kind::Reliability => "reliability",
            Kind::Time => "time",
            Kind::Spread => "learner_spread",
        }
    }

    fn draw<DB: DrawingBackend>(
        self,
        root: &DrawingArea<DB, Shift>,
        name: &str,
        data: &PlotData,
    ) -> DrawResult {
        match self {
            Kind::Reliability => draw_reliability(root, name, data),
            Kind::Time => draw_time(root, name, data),
            Kind::Spread => draw_spread(root, name, data),
        }
    }
}

/// Writes `reliability`, `time` and `learner_spread` as `.png` and `.svg`
/// into `dir` (created if missing), titled with `name`; returns the files.
pub fn write_all(dir: &Path, name: &str, data: &PlotData) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files = Vec::new();
    for kind in [Kind::Reliability, Kind::Time, Kind::Spread] {
        let png = dir.join(format!("{}.png", kind.stem()));
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |message: String| PlotError::Draw { path, message }
        };
        let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
            kind.draw(&root, name, data).map_err(failed(&png))?;
            root.present().map_err(err).map_err(failed(&png))?;
        }
        encode_png(&png, &rgb).map_err(failed(&png))?;
        let svg = dir.join(format!("{}.svg", kind.stem()));
        {
            let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            kind.draw(&root, name, data).map_err(failed(&svg))?;
            root.present().map_err(err).map_err(failed(&svg))?;
        }
        files.push(png);
        files.push(svg);
    }
    Ok(files)
}
