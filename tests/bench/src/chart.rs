//! The chart of a comparison (`latest.png`): for each cluster size, throughput and p99 latency
//! per workload, one bar per system, both on log scales (the systems differ by multiples); and
//! the scale curve's (`scale.png`): each figure per tree size, one bar per system.

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Record, SYSTEMS, cairn_only};

/// Debian's fonts-dejavu-core: the labels' font, read at run time.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; SYSTEMS.len()] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];
/// Width of one workload's group of bars on the x axis.
const GROUP: i32 = 100;
const BAR: i32 = 22;

/// One panel: a value per (workload, system).
struct Panel<'a> {
    title: String,
    unit: &'a str,
    categories: Vec<String>,
    /// `values[category][system]`, 0 where the system has no figure.
    values: Vec<[f64; SYSTEMS.len()]>,
}

fn label(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 10.0 => format!("{v:.0}"),
        v => format!("{v:.2}"),
    }
}

fn register() -> anyhow::Result<()> {
    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .with_context(|| format!("{FONT} (install Debian's fonts-dejavu-core)"))?
            .into_boxed_slice(),
    );
    register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))
}

/// Writes the scale curve's chart of `records` (workload `scale`) to `file`.
pub fn write_scale(file: &Path, records: &[Record]) -> anyhow::Result<()> {
    register()?;
    // Values per count (`clients`: znodes, waiters or watches) of one workload.
    let figure = |workload: &str, pick: &dyn Fn(&Record) -> f64| {
        let rows: Vec<&Record> = records.iter().filter(|r| r.workload == workload).collect();
        let mut counts: Vec<usize> = rows.iter().map(|r| r.clients).collect();
        counts.sort_unstable();
        counts.dedup();
        let values: Vec<[f64; SYSTEMS.len()]> = counts
            .iter()
            .map(|count| {
                SYSTEMS.map(|system| {
                    rows.iter()
                        .find(|r| r.system == system && r.clients == *count)
                        .map_or(0.0, |r| pick(r))
                })
            })
            .collect();
        (counts, values)
    };
    let extra = |name: &'static str| {
        move |r: &Record| r.extra.get(name).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    };
    let tree = |pick: &dyn Fn(&Record) -> f64| figure("scale", pick);
    let panels = [
        ("node memory (RSS)", "MiB", "znodes", tree(&extra("rss_mib"))),
        ("memory per znode", "bytes", "znodes", tree(&extra("rss_bytes_per_znode"))),
        ("snapshot size", "MB", "znodes", tree(&|r| extra("snapshot_bytes")(r) / 1e6)),
        ("snapshot build", "ms", "znodes", tree(&extra("snapshot_build_ms"))),
        ("write p99 during a snapshot", "ms", "znodes", tree(&|r| r.p99_us as f64 / 1000.0)),
        ("restart until serving", "ms", "znodes", tree(&extra("restart_ms"))),
        (
            "fair-lock hand-off by queue length",
            "µs",
            "waiters",
            figure("lock-waiters", &extra("handoff_us")),
        ),
        (
            "watch: memory each; one write's fan-out",
            "bytes, ms",
            "watches",
            figure("watches", &extra("rss_bytes_per_watch")),
        ),
    ];
    let root = BitMapBackend::new(file, (1600, 2000)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled("Cairn and ZooKeeper as the tree grows (one node)", ("sans-serif", 30))
        .map_err(plot_error)?;
    let areas = root.split_evenly((4, 2));
    for (area, (title, unit, what, (counts, mut values))) in areas.iter().zip(panels) {
        let mut categories: Vec<String> =
            counts.iter().map(|n| format!("{} {what}", label(*n as f64))).collect();
        if what == "watches" {
            // Beside the memory, the median fan-out of one write to every session.
            let (_, fanout) = figure("watches", &extra("fanout_ms_median"));
            categories.extend(counts.iter().map(|_| "fan-out ms".to_string()));
            values.extend(fanout);
        }
        let panel = Panel { title: title.to_string(), unit, categories, values };
        draw(area, panel)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Writes the chart of `records` to `file`.
pub fn write(file: &Path, records: &[Record]) -> anyhow::Result<()> {
    register()?;

    let compared: Vec<&Record> = records.iter().filter(|r| !cairn_only(&r.workload)).collect();
    let mut sizes: Vec<usize> = compared.iter().map(|r| r.nodes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let root =
        BitMapBackend::new(file, (1600, 560 * sizes.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled("Cairn, ZooKeeper and etcd on one machine (fsync on)", ("sans-serif", 30))
        .map_err(plot_error)?;
    let rows = root.split_evenly((sizes.len().max(1), 2));
    for (row, nodes) in sizes.iter().enumerate() {
        let mut categories: Vec<(String, usize)> = Vec::new();
        for r in compared.iter().filter(|r| r.nodes == *nodes) {
            if !categories.contains(&(r.workload.clone(), r.clients)) {
                categories.push((r.workload.clone(), r.clients));
            }
        }
        let figure = |pick: fn(&Record) -> f64| -> Vec<[f64; SYSTEMS.len()]> {
            categories
                .iter()
                .map(|(workload, clients)| {
                    SYSTEMS.map(|system| {
                        compared
                            .iter()
                            .find(|r| {
                                r.nodes == *nodes
                                    && r.system == system
                                    && &r.workload == workload
                                    && r.clients == *clients
                            })
                            .map_or(0.0, |r| pick(r))
                    })
                })
                .collect()
        };
        let names: Vec<String> =
            categories.iter().map(|(w, c)| format!("{} ×{c}", short(w))).collect();
        let nodes_text = if *nodes == 1 { "1 node".to_string() } else { format!("{nodes} nodes") };
        draw(
            &rows[row * 2],
            Panel {
                title: format!("{nodes_text}: throughput"),
                unit: "ops/s",
                categories: names.clone(),
                values: figure(|r| r.ops_per_sec),
            },
        )?;
        draw(
            &rows[row * 2 + 1],
            Panel {
                title: format!("{nodes_text}: p99 latency"),
                unit: "ms",
                categories: names,
                values: figure(|r| r.p99_us as f64 / 1000.0),
            },
        )?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// A workload's name short enough to sit under its bars.
fn short(workload: &str) -> &str {
    match workload {
        "contended-lock" => "lock",
        "uncontended-lock" => "own lock",
        "linearizable-read" => "lin. read",
        other => other,
    }
}

fn plot_error<E: std::error::Error + Send + Sync>(error: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}

/// A grouped bar chart with a log y axis.
fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: Panel) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let present = panel.values.iter().flatten().copied().filter(|v| *v > 0.0);
    let low = match present.clone().fold(f64::INFINITY, f64::min) {
        smallest if smallest.is_finite() => smallest / 3.0,
        _ => 0.1,
    };
    // Room above the tallest bar for its label and the legend.
    let high = present.fold(1.0, f64::max) * 40.0;
    let groups = panel.categories.len() as i32;
    let centres: Vec<i32> = (0..groups).map(|i| i * GROUP + GROUP / 2).collect();
    let category =
        |x: &i32| panel.categories.get((*x / GROUP) as usize).cloned().unwrap_or_default();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..groups * GROUP).with_key_points(centres), (low..high).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&category)
        .x_label_style(("sans-serif", 13))
        .y_desc(format!("{} (log)", panel.unit))
        .y_label_formatter(&|v: &f64| label(*v))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    let margin = (GROUP - BAR * SYSTEMS.len() as i32) / 2;
    for (s, system) in SYSTEMS.iter().enumerate() {
        let color = COLORS[s];
        let left = |i: usize| i as i32 * GROUP + margin + s as i32 * BAR;
        let bars = panel.values.iter().enumerate().filter(|(_, v)| v[s] > 0.0).map(|(i, v)| {
            Rectangle::new([(left(i), low), (left(i) + BAR - 2, v[s])], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(*system)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        let values = panel.values.iter().enumerate().filter(|(_, v)| v[s] > 0.0).map(|(i, v)| {
            let style =
                ("sans-serif", 11).into_text_style(area).pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(label(v[s]), (left(i) + BAR / 2, v[s]), style)
        });
        chart.draw_series(values).map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}
