//! The subject's time series as a chart drawn on the server: SVG markup (no script, no inline
//! style: colours are presentation attributes), one point per report, each point a link to its
//! report page. Lines: the probability of the leading conclusions (the codes with the highest
//! probability anywhere in the series) and the mean image-quality score, both 0-100 on one axis.

use dermagate_domain::records::StoredReport;
use maud::{html, Markup};

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// How many conclusions get a line.
const LEADING: usize = 3;
const COLOURS: [&str; LEADING] = ["#1f5fa8", "#b2452b", "#2f7d3b"];
const QUALITY_COLOUR: &str = "#6b5b95";

struct Line {
    label: String,
    colour: &'static str,
    dashed: bool,
    /// (report index, value 0-100) where the report has a value.
    points: Vec<(usize, f64)>,
}

/// The mean quality score (0-100) of a report's images.
pub fn quality(report: &StoredReport) -> Option<f64> {
    let images = &report.report.imaging_study_series;
    (!images.is_empty()).then(|| images.iter().map(|i| f64::from(i.quality.score)).sum::<f64>() / images.len() as f64)
}

fn leading_codes(series: &[StoredReport]) -> Vec<(String, String)> {
    let mut best: Vec<(String, String, f64)> = Vec::new();
    for r in series {
        for c in &r.report.conclusions {
            match best.iter_mut().find(|(code, _, _)| *code == c.code) {
                Some(b) => b.2 = b.2.max(c.probability),
                None => best.push((c.code.clone(), c.display.clone(), c.probability)),
            }
        }
    }
    best.sort_by(|a, b| b.2.total_cmp(&a.2));
    best.into_iter().take(LEADING).map(|(code, display, _)| (code, display)).collect()
}

/// The chart of `series` (in time order).
pub fn series_chart(series: &[StoredReport]) -> Markup {
    let n = series.len();
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| if n <= 1 { LEFT + plot_w / 2.0 } else { LEFT + plot_w * i as f64 / (n - 1) as f64 };
    let y = |v: f64| TOP + plot_h * (1.0 - v.clamp(0.0, 100.0) / 100.0);
    let mut lines: Vec<Line> = leading_codes(series)
        .into_iter()
        .zip(COLOURS)
        .map(|((code, display), colour)| Line {
            label: format!("{code} {display}"),
            colour,
            dashed: false,
            points: series
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.report.conclusions.iter().find(|c| c.code == code).map(|c| (i, c.probability)))
                .collect(),
        })
        .collect();
    lines.push(Line {
        label: "Image quality score".into(),
        colour: QUALITY_COLOUR,
        dashed: true,
        points: series.iter().enumerate().filter_map(|(i, r)| quality(r).map(|q| (i, q))).collect(),
    });
    let path = |line: &Line| {
        line.points
            .iter()
            .enumerate()
            .map(|(k, (i, v))| format!("{}{:.1},{:.1}", if k == 0 { "M" } else { " L" }, x(*i), y(*v)))
            .collect::<String>()
    };
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-labelledby="chart-title" width="100%" {
            title #chart-title { "Probability of the leading conclusions and image quality, one point per report" }
            @for tick in [0.0, 25.0, 50.0, 75.0, 100.0] {
                line x1=(LEFT) x2=(LEFT + plot_w) y1=(y(tick)) y2=(y(tick)) stroke="#d0d4da" stroke-width="1" {}
                text x=(LEFT - 6.0) y=(y(tick) + 4.0) text-anchor="end" font-size="11" fill="#444" { (tick) "%" }
            }
            @for (i, r) in series.iter().enumerate() {
                text x=(x(i)) y=(HEIGHT - BOTTOM + 16.0) text-anchor="middle" font-size="10" fill="#444" {
                    (r.report.issued.get(5..16).unwrap_or(&r.report.issued).replace('T', " "))
                }
            }
            @for line in &lines {
                @if line.points.len() > 1 {
                    path d=(path(line)) fill="none" stroke=(line.colour) stroke-width="2"
                        stroke-dasharray=[line.dashed.then_some("6 4")] {}
                }
                @for (i, v) in &line.points {
                    a href=(format!("/console/reports/{}", series[*i].report.id)) {
                        circle cx=(format!("{:.1}", x(*i))) cy=(format!("{:.1}", y(*v))) r="5" fill=(line.colour) {
                            title { (line.label) ": " (format!("{v:.1}")) " % — report of " (series[*i].report.issued) }
                        }
                    }
                }
            }
            @for (k, line) in lines.iter().enumerate() {
                @let ly = TOP + 8.0 + 20.0 * k as f64;
                line x1=(WIDTH - RIGHT + 12.0) x2=(WIDTH - RIGHT + 32.0) y1=(ly) y2=(ly) stroke=(line.colour) stroke-width="3"
                    stroke-dasharray=[line.dashed.then_some("6 4")] {}
                text x=(WIDTH - RIGHT + 38.0) y=(ly + 4.0) font-size="11" fill="#222" { (line.label.chars().take(28).collect::<String>()) }
            }
        }
    }
}
