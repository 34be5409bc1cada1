//! A small, dependency-free SVG line chart for reports (benchmark and chaos runs): one or two
//! series over time, each on its own y axis, with vertical markers for events such as faults.
//! It draws; it never reads files or the clock.

use std::fmt::Write as _;

/// One line on the chart: `(x, y)` points in x order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
}

/// A vertical line at `x` with a short label (a fault, a leader kill).
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    /// Drawn against the left axis.
    pub left: Series,
    /// Drawn against the right axis, when given.
    pub right: Option<Series>,
    pub markers: Vec<Marker>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 70.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
const TICKS: u32 = 5;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The largest value of `values`, at least `floor`, rounded up to a tidy number.
fn axis_max(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    let max = values.fold(floor, f64::max);
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    max
}

fn label(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn polyline(
    out: &mut String,
    series: &Series,
    x_scale: impl Fn(f64) -> f64,
    y_scale: impl Fn(f64) -> f64,
) {
    let points: Vec<String> = series
        .points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", x_scale(*x), y_scale(*y)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
        escape(&series.color),
        points.join(" ")
    );
}

/// Renders `chart` as a standalone SVG document.
pub fn svg(chart: &Chart) -> String {
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let all_x = chart
        .left
        .points
        .iter()
        .chain(chart.right.iter().flat_map(|s| s.points.iter()))
        .map(|(x, _)| *x)
        .chain(chart.markers.iter().map(|m| m.x));
    let x_max = axis_max(all_x, 1.0);
    let left_max = axis_max(chart.left.points.iter().map(|(_, y)| *y), 1.0);
    let right_max = chart
        .right
        .as_ref()
        .map(|s| axis_max(s.points.iter().map(|(_, y)| *y), 1.0));
    let x_scale = |x: f64| MARGIN_LEFT + x / x_max * plot_width;
    let y_left = |y: f64| MARGIN_TOP + plot_height - y / left_max * plot_height;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(&chart.title)
    );
    // Grid and axis labels.
    for tick in 0..=TICKS {
        let fraction = f64::from(tick) / f64::from(TICKS);
        let y = MARGIN_TOP + plot_height - fraction * plot_height;
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            WIDTH - MARGIN_RIGHT
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{}">{}</text>"#,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            escape(&chart.left.color),
            label(fraction * left_max)
        );
        if let (Some(right), Some(max)) = (&chart.right, right_max) {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
                WIDTH - MARGIN_RIGHT + 6.0,
                y + 4.0,
                escape(&right.color),
                label(fraction * max)
            );
        }
        let x = MARGIN_LEFT + fraction * plot_width;
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            HEIGHT - MARGIN_BOTTOM + 18.0,
            label(fraction * x_max)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_width / 2.0,
        HEIGHT - 10.0,
        escape(&chart.x_label)
    );
    for marker in &chart.markers {
        let x = x_scale(marker.x);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="{}" stroke-dasharray="4,3"/>"#,
            MARGIN_TOP + plot_height,
            escape(&marker.color)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="{}" font-size="10" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
            x - 3.0,
            MARGIN_TOP + 70.0,
            escape(&marker.color),
            x - 3.0,
            MARGIN_TOP + 70.0,
            escape(&marker.label)
        );
    }
    polyline(&mut out, &chart.left, x_scale, y_left);
    if let (Some(right), Some(max)) = (&chart.right, right_max) {
        let y_right = |y: f64| MARGIN_TOP + plot_height - y / max * plot_height;
        polyline(&mut out, right, x_scale, y_right);
    }
    // Legend.
    let mut legend_x = MARGIN_LEFT;
    for series in std::iter::once(&chart.left).chain(chart.right.iter()) {
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="14" height="3" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            MARGIN_TOP - 12.0,
            escape(&series.color),
            legend_x + 18.0,
            MARGIN_TOP - 7.0,
            escape(&series.name)
        );
        legend_x += 30.0 + 7.0 * series.name.len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "acked <transfers>/s".into(),
            x_label: "seconds".into(),
            left: Series {
                name: "tps".into(),
                color: "#1f77b4".into(),
                points: vec![(0.0, 10.0), (1.0, 930.0), (2.0, 0.0)],
            },
            right: Some(Series {
                name: "p99 ms".into(),
                color: "#d62728".into(),
                points: vec![(0.0, 2.0), (2.0, 45.0)],
            }),
            markers: vec![Marker {
                x: 1.5,
                label: "kill leader".into(),
                color: "#888".into(),
            }],
        }
    }

    #[test]
    fn the_chart_is_a_well_formed_svg_with_every_part() {
        let svg = svg(&chart());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("kill leader"));
        assert!(svg.contains("acked &lt;transfers&gt;/s"), "text is escaped");
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn axes_round_up_to_tidy_maxima() {
        assert_eq!(axis_max([930.0].into_iter(), 1.0), 1000.0);
        assert_eq!(axis_max([45.0].into_iter(), 1.0), 50.0);
        assert_eq!(axis_max([0.0].into_iter(), 1.0), 1.0);
        assert_eq!(axis_max([120.0].into_iter(), 1.0), 120.0);
        assert_eq!(axis_max([101.0].into_iter(), 1.0), 120.0);
        assert_eq!(axis_max([61.0].into_iter(), 1.0), 80.0);
    }
}
