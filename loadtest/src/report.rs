//! The report of a suite: `results.json` (everything measured), `summary.md`
//! (the tables BENCHMARKS.md quotes) and `report.html` (the same with SVG
//! charts: latency histograms, throughput over time, cost curves).

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::scenarios::Outcome;

/// The machine a suite ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's description (Linux).
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            // Every CPU of the machine, not the ones this process is pinned to.
            cores: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .max(1),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// One case of a suite: a scenario with server settings, run against each server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Case {
    /// Its id (`stream-100`, `idle-20000`, …).
    pub id: String,
    /// What it shows.
    pub title: String,
    /// Reply length in tokens.
    pub tokens: usize,
    /// Pause between tokens, ms.
    pub delay_ms: u64,
    /// The median run of each server (by its main figure).
    pub outcomes: Vec<Outcome>,
    /// Every run, for the record.
    pub runs: Vec<Outcome>,
}

impl Case {
    /// The outcome of the server named `label`.
    pub fn of(&self, label: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.label == label)
    }
}

/// Everything a suite measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SuiteResult {
    /// Where.
    pub machine: Machine,
    /// When (seconds since the Unix epoch).
    pub unix_time: u64,
    /// Runs per case (the median is reported).
    pub runs: usize,
    /// How the processes were placed.
    pub placement: String,
    /// The cases.
    pub cases: Vec<Case>,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// How long until every client's first reply had its first token, and the
/// server's CPU by then per connection: "152 ms, 118 µs"; "–" where the
/// scenario has no replies or a client never got one.
fn opening(outcome: &Outcome) -> String {
    let cpu = outcome.server.and_then(|s| s.opening_cpu_us_per_connection);
    match (outcome.opening_ms, cpu) {
        (Some(ms), Some(us)) => format!("{ms:.0} ms, {us:.0} µs"),
        (Some(ms), None) => format!("{ms:.0} ms"),
        _ => "–".into(),
    }
}

/// The tables of `summary.md`.
pub fn summary_markdown(result: &SuiteResult) -> String {
    let mut out = String::new();
    let m = &result.machine;
    let _ = writeln!(
        out,
        "Machine: {} ({} cores, {:.0} GiB, Linux {}). {} Median of {} runs.\n",
        m.cpu, m.cores, m.memory_gib, m.kernel, result.placement, result.runs
    );
    let _ = writeln!(
        out,
        "| case | server | done | tokens/s | tokens per server CPU-s | server CPU | first token p50 / p99 ms | token gap p99 ms | connect p99 ms | opening: ms, server CPU µs per conn | RSS per conn KiB | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in &result.cases {
        for o in &case.outcomes {
            let cost = o.server.unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {}/{} | {:.0} | {:.0} | {:.0} % | {:.1} / {:.1} | {:.1} | {:.1} | {} | {:.1} | {} |",
                case.id,
                o.label,
                o.completed,
                o.expected,
                o.tokens_per_s,
                cost.tokens_per_cpu_s,
                cost.cpu_pct,
                o.first_token_ms.p50,
                o.first_token_ms.p99,
                o.inter_arrival_ms.p99,
                o.connect_ms.p99,
                opening(o),
                cost.rss_per_connection_kib,
                o.error_count + o.integrity_errors + o.lost_tokens + o.duplicated_tokens,
            );
        }
        for peer in ["baseline", "node-ws"] {
            if let (Some(rill), Some(other)) = (case.of("rill"), case.of(peer)) {
                let (r, o) = (
                    rill.server.unwrap_or_default(),
                    other.server.unwrap_or_default(),
                );
                let _ = writeln!(
                    out,
                    "| {} | rill ÷ {peer} | | | {} | | | | | | {} | |",
                    case.id,
                    ratio(r.tokens_per_cpu_s, o.tokens_per_cpu_s),
                    ratio(r.rss_per_connection_kib, o.rss_per_connection_kib),
                );
            }
        }
    }
    out
}

/// Writes `results.json`, `summary.md` and `report.html` into `dir`.
pub fn write(dir: &Path, result: &SuiteResult) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(result).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(dir.join("summary.md"), summary_markdown(result))?;
    std::fs::write(dir.join("report.html"), html(result))?;
    Ok(())
}

/// A line chart of named series as an SVG document.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let mut svg = String::new();
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let (x_max, y_max) = (x_max.max(1e-9) * 1.02, y_max.max(1e-9) * 1.1);
    {
        let root = SVGBackend::with_string(&mut svg, (640, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let built = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max);
        if let Ok(mut chart) = built {
            draw_lines(&mut chart, x_label, y_label, series);
        }
        let _ = root.present();
    }
    svg
}

/// Draws the series, their axes and legend.
fn draw_lines<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) {
    {
        let _ = chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw();
        let colors = [RED, BLUE, GREEN, MAGENTA];
        for (i, (name, data)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            if let Ok(drawn) =
                chart.draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            {
                drawn
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
        }
        let _ = chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw();
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One series per server of a figure over the run's time.
fn over_time(
    case: &Case,
    figure: fn(&crate::scenarios::Point) -> f64,
) -> Vec<(String, Vec<(f64, f64)>)> {
    case.outcomes
        .iter()
        .map(|o| {
            (
                o.label.clone(),
                o.timeline.iter().map(|p| (p.t_s, figure(p))).collect(),
            )
        })
        .collect()
}

/// The HTML report.
pub fn html(result: &SuiteResult) -> String {
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>rill benchmark</title>\
         <style>body{font:14px system-ui;margin:2em;max-width:1400px}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}\
         svg{margin:4px}</style><h1>rill benchmark</h1>",
    );
    let _ = write!(out, "<pre>{}</pre>", escape(&summary_markdown(result)));
    for case in &result.cases {
        let _ = write!(
            out,
            "<h2>{} — {}</h2>",
            escape(&case.id),
            escape(&case.title)
        );
        let histograms: Vec<(String, Vec<(f64, f64)>)> = case
            .outcomes
            .iter()
            .filter(|o| !o.first_token_histogram.is_empty())
            .map(|o| {
                (
                    o.label.clone(),
                    o.first_token_histogram
                        .iter()
                        .map(|&(x, c)| (x, c as f64))
                        .collect(),
                )
            })
            .collect();
        if !histograms.is_empty() {
            out.push_str(&line_chart(
                "time to first token",
                "ms",
                "replies",
                &histograms,
            ));
        }
        out.push_str(&line_chart(
            "tokens per second",
            "s",
            "tokens/s",
            &over_time(case, |p| p.tokens_per_s),
        ));
        out.push_str(&line_chart(
            "server memory",
            "s",
            "RSS MiB",
            &over_time(case, |p| p.rss_kib as f64 / 1024.0),
        ));
    }
    // Cost curves across cases of the same family.
    for (family, x_label, x_of) in [
        (
            "conns-",
            "connections",
            (|o: &Outcome| match o.scenario {
                Some(crate::scenarios::Scenario::Stream { connections, .. }) => connections as f64,
                _ => 0.0,
            }) as fn(&Outcome) -> f64,
        ),
        (
            "length-",
            "reply tokens",
            (|o: &Outcome| o.tokens as f64 / o.completed.max(1) as f64) as fn(&Outcome) -> f64,
        ),
    ] {
        let cases: Vec<&Case> = result
            .cases
            .iter()
            .filter(|c| c.id.starts_with(family))
            .collect();
        if cases.is_empty() {
            continue;
        }
        let _ = write!(out, "<h2>cost against {x_label}</h2>");
        for (title, y_label, y_of) in [
            (
                "server CPU per 1000 tokens",
                "CPU ms",
                (|o: &Outcome| {
                    o.server
                        .map_or(0.0, |s| s.cpu_s * 1e6 / o.tokens.max(1) as f64)
                }) as fn(&Outcome) -> f64,
            ),
            (
                "first token p99",
                "ms",
                (|o: &Outcome| o.first_token_ms.p99) as fn(&Outcome) -> f64,
            ),
        ] {
            let series: Vec<(String, Vec<(f64, f64)>)> = ["rill", "baseline", "node-ws"]
                .iter()
                .map(|label| {
                    (
                        (*label).to_owned(),
                        cases
                            .iter()
                            .filter_map(|c| c.of(label))
                            .map(|o| (x_of(o), y_of(o)))
                            .collect(),
                    )
                })
                .collect();
            out.push_str(&line_chart(title, x_label, y_label, &series));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{Scenario, ServerCost};

    #[test]
    fn the_summary_has_a_row_per_server_and_the_ratio() {
        let outcome = |label: &str, tokens_per_cpu_s: f64| Outcome {
            scenario: Some(Scenario::Stream {
                connections: 10,
                messages: 2,
                ramp_ms: 0,
            }),
            label: label.into(),
            completed: 20,
            expected: 20,
            server: Some(ServerCost {
                tokens_per_cpu_s,
                ..ServerCost::default()
            }),
            ..Outcome::default()
        };
        let mut rill = outcome("rill", 300.0);
        rill.opening_ms = Some(152.4);
        if let Some(server) = rill.server.as_mut() {
            server.opening_cpu_us_per_connection = Some(118.2);
        }
        let result = SuiteResult {
            runs: 1,
            cases: vec![Case {
                id: "stream-10".into(),
                outcomes: vec![rill, outcome("baseline", 100.0)],
                ..Case::default()
            }],
            ..SuiteResult::default()
        };
        let summary = summary_markdown(&result);
        assert!(
            summary.contains("| stream-10 | rill | 20/20 |"),
            "{summary}"
        );
        assert!(summary.contains("3.00×"), "{summary}");
        // The opening where it was measured, a dash where it was not.
        assert!(summary.contains("| 152 ms, 118 µs |"), "{summary}");
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with("| stream-10 | baseline |") && l.contains("| – |")),
            "{summary}"
        );
        let page = html(&result);
        assert!(page.contains("<svg"), "charts are inline SVG");
    }
}
