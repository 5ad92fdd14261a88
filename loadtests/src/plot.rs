//! Latency percentile plots as SVG, one line per run, on the usual HDR axis: the x position
//! of percentile p is log10(1 / (1 - p)), so the tail gets as much room as the median.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
/// The tail is drawn up to 99.999 %.
const MAX_X: f64 = 5.0;

fn x_of(percentile: f64) -> f64 {
    let p = (percentile / 100.0).clamp(0.0, 0.99999);
    (1.0 / (1.0 - p)).log10().min(MAX_X)
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws `series` (label, points of (percentile 0..100, latency ms)) as one SVG document.
pub fn percentile_svg(series: &[(String, Vec<(f64, f64)>)]) -> String {
    percentile_svg_titled(series, "Latency by percentile")
}

/// [`percentile_svg`] with a title.
pub fn percentile_svg_titled(series: &[(String, Vec<(f64, f64)>)], title: &str) -> String {
    let max_ms = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let max_x = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| x_of(p.0)))
        .fold(1.0f64, f64::max);
    let px = |x: f64| LEFT + x / max_x * (W - LEFT - RIGHT);
    let py = |ms: f64| H - BOTTOM - ms / max_ms * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
    ] {
        let x = x_of(p);
        if x > max_x + 1e-9 {
            continue;
        }
        let (x0, y0, y1) = (px(x), py(0.0), py(max_ms));
        let _ = write!(
            s,
            r##"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{x0:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            y0 + 16.0
        );
    }
    for i in 0..=5 {
        let ms = max_ms * f64::from(i) / 5.0;
        let y = py(ms);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms:.2}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency (ms)</text>"#,
        H / 2.0,
        H / 2.0
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        W / 2.0,
        H - 8.0
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (j, (p, ms)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                px(x_of(*p)),
                py(*ms)
            );
        }
        let _ = write!(
            s,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            d.trim_end()
        );
        let ly = TOP + 10.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Draws `series` (label, points of (seconds, value)) over time as one SVG document.
pub fn timeseries_svg(title: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let max_y = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let max_t = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let px = |t: f64| LEFT + t / max_t * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - v / max_y * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="white"/><text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for i in 0..=5 {
        let v = max_y * f64::from(i) / 5.0;
        let y = py(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        let t = max_t * f64::from(i) / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"#,
            px(t),
            H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text>"#,
        H / 2.0,
        H / 2.0,
        esc(y_label),
        W / 2.0,
        H - 8.0
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (j, (t, v)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                px(*t),
                py(*v)
            );
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                d.trim_end()
            );
        }
        let ly = TOP + 10.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `streamgate load plot`: one SVG from several JSON reports of `load proto`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// The SVG to write.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// `label=report.json` pairs.
    #[arg(required = true)]
    pub runs: Vec<String>,
}

/// Reads the reports and writes the plot.
pub fn plot_cli(args: PlotArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for r in &args.runs {
        let (label, path) = r
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{r:?} is not label=file.json"))?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let pts = v["distribution"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{path}: no distribution"))?
            .iter()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        series.push((label.to_owned(), pts));
    }
    std::fs::write(&args.out, percentile_svg(&series))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_with_one_path_per_series() {
        let pts = vec![
            (0.0, 0.1),
            (50.0, 0.5),
            (99.0, 2.0),
            (99.9, 3.0),
            (100.0, 9.0),
        ];
        let svg = percentile_svg(&[("h2 <tls>".into(), pts.clone()), ("h3".into(), pts)]);
        let mut reader = quick_xml::Reader::from_str(&svg);
        let mut paths = 0;
        loop {
            match reader.read_event().expect("well-formed XML") {
                quick_xml::events::Event::Eof => break,
                quick_xml::events::Event::Empty(e) if e.name().as_ref() == b"path" => paths += 1,
                _ => {}
            }
        }
        assert_eq!(paths, 2);
        assert!(svg.contains("h2 &lt;tls&gt;"));
        assert!(x_of(99.0) > x_of(90.0) && x_of(90.0) > x_of(0.0));
    }
}
