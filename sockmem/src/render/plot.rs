//! `sockmem plot`: per socket, a panel with `sk_wmem_queued` and `sk_wmem_alloc` over time (step
//! lines through the readings of its events and snapshots, each value held until the next
//! reading and the last until the socket's end: a stalled socket holds its bytes for the whole
//! recording with hardly an event), `sk_sndbuf` as a reference, sendmsg calls and drops as
//! marks, time blocked in send calls as shaded spans; the panels stacked on one time axis
//! (seconds since the recording started). Drawn with plotters, as SVG or as PNG.
//!
//! The TSQ limit is drawn where the recording has snapshots (`record --snapshot SECS`): at each,
//! `max(2 × truesize, pacing_rate >> pacing_shift)` capped by `net.ipv4.tcp_limit_output_bytes`
//! as the kernel computes it (see `pipeline::timeline`), held until the next; without
//! snapshots the legend says "not recorded". It is drawn (and sets the y range) only where the
//! socket's `sk_wmem_alloc` came within [`TSQ_SHARE`] of it: a receiver's few bytes would
//! otherwise be flattened against a limit it never neared; the legend then says so.
//!
//! In the SVG, each series is one `<polyline>` with `class="series sk_wmem_queued"` (or
//! `sk_wmem_alloc`, `sk_sndbuf`, `tsq_limit`), `data-sock` (the socket id) and `data-readings` (how many
//! readings the series has: every event that read the counters and every snapshot, for
//! `sk_sndbuf` the readings where it changed and the last). A step line through K readings has
//! 2K − 1 vertices, and one more where the last value holds on to the socket's end (its
//! `sock_destroy`, else the recording's end); K is `data-readings` up to [`MAX_READINGS`]. A series with more keeps, per pixel column, the
//! column's first, lowest, highest and last reading, so spikes stay visible.

use std::sync::OnceLock;

use anyhow::{anyhow, Context as _};
use plotters::{
    coord::Shift,
    prelude::*,
    style::{register_font, FontStyle},
};

use super::{bitmap::Bitmap, bytes_in_unit, human_bytes, unit_bytes};
use crate::pipeline::timeline::{Reading, SocketTimeline, Timeline};

pub const WIDTH: u32 = 1200;
pub const PANEL_HEIGHT: u32 = 300;
const TITLE_HEIGHT: u32 = 40;
/// The legend column at the right of each panel.
const LEGEND_WIDTH: u32 = 250;
/// Readings per series drawn as they are; more are thinned per pixel column.
pub const MAX_READINGS: usize = 5000;
/// The TSQ limit is drawn where `sk_wmem_alloc` reached at least this share of its lowest.
pub const TSQ_SHARE: f64 = 0.1;

/// The socket's `sk_wmem_alloc` came near the TSQ limit (see [`TSQ_SHARE`]).
fn tsq_shown(s: &SocketTimeline) -> bool {
    let lowest = s.tsq_limit.iter().map(|&(_, l)| l).min();
    let alloc = s.readings.iter().map(|r| r.alloc).max().unwrap_or(0);
    lowest.is_some_and(|l| f64::from(alloc.max(0)) >= l as f64 * TSQ_SHARE)
}

const QUEUED: RGBColor = RGBColor(31, 119, 180);
const ALLOC: RGBColor = RGBColor(255, 127, 14);
const SNDBUF: RGBColor = RGBColor(105, 105, 105);
const TSQ: RGBColor = RGBColor(148, 103, 189);
const SENDMSG: RGBColor = RGBColor(44, 160, 44);
const BLOCKED: RGBColor = RGBColor(214, 39, 40);
const DROP: RGBColor = RGBColor(118, 42, 131);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// From the output's extension: `.svg` or `.png`.
    pub fn of(path: &std::path::Path) -> anyhow::Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(anyhow!(
                "`{}`: the output's name must end in .svg or .png (that chooses the format)",
                path.display()
            )),
        }
    }
}

/// What to draw: the panels, and how many sockets were left out.
pub struct Plot<'a> {
    pub timeline: &'a Timeline,
    pub panels: Vec<&'a SocketTimeline>,
    pub left_out: usize,
    /// The recording's file name, for the title.
    pub source: String,
}

impl<'a> Plot<'a> {
    /// The sockets given (`--socket`), or the `max` busiest (most readings); every one must
    /// have a reading to draw.
    pub fn choose(
        timeline: &'a Timeline,
        sockets: &[u64],
        max: usize,
        source: String,
    ) -> anyhow::Result<Plot<'a>> {
        let drawable: Vec<&SocketTimeline> = timeline
            .sockets
            .iter()
            .filter(|s| !s.readings.is_empty())
            .collect();
        let ids = || {
            let ids: Vec<String> = drawable.iter().map(|s| s.sock_id.to_string()).collect();
            ids.join(", ")
        };
        anyhow::ensure!(
            !drawable.is_empty(),
            "no socket of the recording ({} events) has an event that matches the filters",
            timeline.recorded_events
        );
        let (panels, left_out) = if sockets.is_empty() {
            let mut busiest = drawable.clone();
            busiest.sort_by_key(|s| std::cmp::Reverse(s.readings.len()));
            busiest.truncate(max);
            // In the order they were first seen.
            let panels: Vec<_> = drawable
                .iter()
                .copied()
                .filter(|s| busiest.iter().any(|b| b.sock_id == s.sock_id))
                .collect();
            let left_out = drawable.len() - panels.len();
            (panels, left_out)
        } else {
            let mut panels = Vec::new();
            for id in sockets {
                let s = drawable.iter().find(|s| s.sock_id == *id).ok_or_else(|| {
                    anyhow!(
                        "socket {id} has no event in the recording that matches the filters; \
                         sockets that do: {}",
                        ids()
                    )
                })?;
                if !panels.iter().any(|p: &&SocketTimeline| p.sock_id == *id) {
                    panels.push(*s);
                }
            }
            (panels, 0)
        };
        Ok(Plot {
            timeline,
            panels,
            left_out,
            source,
        })
    }

    /// Writes the plot to `path`, as its extension says (SVG or PNG); the file is in place
    /// only once complete.
    pub fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let bytes = match Format::of(path)? {
            Format::Svg => self.svg()?.into_bytes(),
            Format::Png => self.png()?,
        };
        let mut out = crate::output::OutputFile::create(path)?;
        out.write_all(&bytes)
            .with_context(|| format!("writing `{}`", path.display()))?;
        out.commit()?;
        Ok(())
    }

    pub fn size(&self) -> (u32, u32) {
        (
            WIDTH,
            TITLE_HEIGHT + PANEL_HEIGHT * self.panels.len() as u32,
        )
    }

    pub fn svg(&self) -> anyhow::Result<String> {
        fonts()?;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing the plot: {e}"))?;
            root.present()
                .map_err(|e| anyhow!("drawing the plot: {e}"))?;
        }
        Ok(self.tag_series(&out))
    }

    /// The plot as a PNG file's bytes.
    pub fn png(&self) -> anyhow::Result<Vec<u8>> {
        fonts()?;
        let (w, h) = self.size();
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = Bitmap(BitMapBackend::with_buffer(&mut rgb, (w, h))).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing the plot: {e}"))?;
            root.present()
                .map_err(|e| anyhow!("drawing the plot: {e}"))?;
        }
        let mut png_bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::High);
        let mut writer = enc.write_header().context("encoding the PNG")?;
        writer.write_image_data(&rgb).context("encoding the PNG")?;
        writer.finish().context("encoding the PNG")?;
        Ok(png_bytes)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(TITLE_HEIGHT);
        let shown = self.panels.len();
        let left_out = match self.left_out {
            0 => String::new(),
            n => format!(" ({n} more not shown: --socket ID or --panels N)"),
        };
        title.draw(&Text::new(
            format!(
                "sockmem · {} · kernel {} · {shown} socket{}{left_out}",
                self.source,
                self.timeline.kernel,
                if shown == 1 { "" } else { "s" },
            ),
            (12, 12),
            ("sans-serif", 18).into_font().color(&BLACK),
        ))?;
        let x = self.x_range();
        let areas = body.split_evenly((shown.max(1), 1));
        for (i, (s, area)) in self.panels.iter().zip(&areas).enumerate() {
            self.panel(s, area, x.clone(), i + 1 == shown)?;
        }
        Ok(())
    }

    /// The time axis, shared by the panels: from the first to the last event of the sockets
    /// shown (seconds since the recording started), with a margin.
    fn x_range(&self) -> std::ops::Range<f64> {
        let t = self.timeline;
        let secs = |ns: u64| t.rel_ns(ns) as f64 / 1e9;
        let times = self.panels.iter().flat_map(|s| {
            let first = s.readings.first().map(|r| r.ts_ns);
            // Its last readings hold until its end.
            let last = s.readings.last().map(|_| s.end_ns);
            let spans = s
                .sendmsg
                .iter()
                .chain(&s.blocked)
                .flat_map(|sp| [sp.start_ns, sp.end_ns]);
            first
                .into_iter()
                .chain(last)
                .chain(spans)
                .chain(s.drops.iter().map(|d| d.ts_ns))
        });
        let (lo, hi) = times.fold((f64::MAX, 0f64), |(lo, hi), ns| {
            (lo.min(secs(ns)), hi.max(secs(ns)))
        });
        if lo > hi {
            return 0.0..(t.duration_ns as f64 / 1e9).max(1e-3);
        }
        let margin = ((hi - lo) * 0.02).max(1e-4);
        (lo - margin).max(0.0)..hi + margin
    }

    fn panel<DB: DrawingBackend>(
        &self,
        s: &SocketTimeline,
        area: &DrawingArea<DB, Shift>,
        x: std::ops::Range<f64>,
        bottom: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let t = self.timeline;
        let secs = |ns: u64| t.rel_ns(ns) as f64 / 1e9;
        let (chart_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        let tsq_max = s.tsq_limit.iter().map(|&(_, l)| l).max().unwrap_or(0);
        let tsq = tsq_shown(s);
        let highest = s
            .readings
            .iter()
            .map(|r| r.queued.max(r.alloc).max(r.sndbuf))
            .max()
            .unwrap_or(0)
            .max(match tsq {
                true => i32::try_from(tsq_max).unwrap_or(i32::MAX),
                false => 0,
            });
        let until = secs(s.end_ns);
        // The y axis counts KiB (or MiB) so that its ticks fall on round numbers of them.
        let unit = Unit::for_max(highest as f64);
        let top = (highest as f64 / unit.bytes()).max(1.0) * 1.08;
        let val = |v: i32| v as f64 / unit.bytes();
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(
                format!(
                    "sock {} · {} · {}",
                    s.sock_id,
                    s.four_tuple(),
                    s.sender_name()
                ),
                ("sans-serif", 15).into_font(),
            )
            .margin_left(8)
            .margin_right(8)
            .margin_top(4)
            .x_label_area_size(if bottom { 44 } else { 24 })
            .y_label_area_size(72)
            .build_cartesian_2d(x.clone(), 0f64..top)?;
        let span = x.end - x.start;
        let decimals = if span < 0.05 {
            4
        } else if span < 1.0 {
            3
        } else if span < 20.0 {
            2
        } else {
            1
        };
        let x_fmt = move |v: &f64| format!("{v:.decimals$}");
        let y_fmt = |v: &f64| unit.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(12)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.12))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .y_desc("bytes");
        if bottom {
            mesh.x_desc("seconds since the recording started");
        }
        mesh.draw()?;

        // Shaded first, so the lines stay on top.
        chart.draw_series(s.blocked.iter().map(|b| {
            Rectangle::new(
                [(secs(b.start_ns), 0.0), (secs(b.end_ns), top)],
                BLOCKED.mix(0.18).filled(),
            )
        }))?;
        let tick = top * 0.07;
        chart.draw_series(s.sendmsg.iter().map(|c| {
            let x = secs(c.end_ns);
            PathElement::new(vec![(x, 0.0), (x, tick)], SENDMSG.stroke_width(2))
        }))?;
        let sndbuf = changes(&s.readings, |r| r.sndbuf);
        chart.draw_series(std::iter::once(PathElement::new(
            step(&sndbuf, |r| val(r.sndbuf), &secs, until),
            SNDBUF.stroke_width(1),
        )))?;
        let width_px = chart.plotting_area().dim_in_pixel().0 as usize;
        for (color, value) in [
            (QUEUED, (|r: &Reading| r.queued) as fn(&Reading) -> i32),
            (ALLOC, |r: &Reading| r.alloc),
        ] {
            let kept = thin(&s.readings, value, &secs, &x, width_px);
            chart.draw_series(std::iter::once(PathElement::new(
                step(&kept, |r| val(value(r)), &secs, until),
                color.stroke_width(2),
            )))?;
        }
        // Over the counters: sk_wmem_alloc lives just around it.
        if tsq {
            chart.draw_series(std::iter::once(PathElement::new(
                step_points(&s.tsq_limit, |l| l as f64 / unit.bytes(), &secs, until),
                TSQ.stroke_width(2),
            )))?;
        }
        chart.draw_series(
            s.drops
                .iter()
                .map(|d| Cross::new((secs(d.ts_ns), top * 0.95), 5, DROP.stroke_width(2))),
        )?;

        // The legend, beside the chart: what each mark is, and the numbers behind it.
        let max = |f: fn(&Reading) -> i32| s.readings.iter().map(f).max().unwrap_or(0);
        let blocked_ns: u64 = s.blocked.iter().map(|b| b.end_ns - b.start_ns).sum();
        let font = ("sans-serif", 13).into_font();
        let entries: [(&str, String, Swatch); 7] = [
            (
                "sk_wmem_queued",
                format!("max {}", human_bytes(max(|r| r.queued) as f64)),
                Swatch::Line(QUEUED, 3),
            ),
            (
                "sk_wmem_alloc",
                format!("max {}", human_bytes(max(|r| r.alloc) as f64)),
                Swatch::Line(ALLOC, 3),
            ),
            (
                "sk_sndbuf",
                format!("max {}", human_bytes(max(|r| r.sndbuf) as f64)),
                Swatch::Line(SNDBUF, 1),
            ),
            (
                "sendmsg call",
                format!("{} calls", s.sendmsg.len()),
                Swatch::Tick(SENDMSG),
            ),
            (
                "blocked in send",
                duration(blocked_ns),
                Swatch::Shade(BLOCKED),
            ),
            (
                "skb drop",
                format!("{}", s.drops.len()),
                Swatch::Cross(DROP),
            ),
            if s.tsq_limit.is_empty() {
                ("TSQ limit", "not recorded".to_owned(), Swatch::None)
            } else if !tsq {
                // Not drawn: sk_wmem_alloc never came near it.
                (
                    "TSQ limit",
                    format!("{}, far", human_bytes(tsq_max as f64)),
                    Swatch::None,
                )
            } else {
                (
                    "TSQ limit",
                    format!("max {}", human_bytes(tsq_max as f64)),
                    Swatch::Line(TSQ, 2),
                )
            },
        ];
        let (x0, mut y) = (8, 30);
        for (name, note, swatch) in entries {
            let c = (x0 + 10, y + 7);
            match swatch {
                Swatch::Line(col, w) => legend_area.draw(&Rectangle::new(
                    [
                        (x0, c.1 - w as i32 / 2),
                        (x0 + 20, c.1 + (w as i32 + 1) / 2),
                    ],
                    col.filled(),
                ))?,
                Swatch::Tick(col) => legend_area
                    .draw(&Rectangle::new([(c.0, y), (c.0 + 1, y + 14)], col.filled()))?,
                Swatch::Shade(col) => legend_area.draw(&Rectangle::new(
                    [(x0, y), (x0 + 20, y + 14)],
                    col.mix(0.18).filled(),
                ))?,
                Swatch::Cross(col) => legend_area.draw(&Cross::new(c, 5, col.stroke_width(2)))?,
                Swatch::None => {}
            }
            legend_area.draw(&Text::new(name.to_owned(), (x0 + 28, y), font.clone()))?;
            legend_area.draw(&Text::new(
                note,
                (x0 + 146, y),
                font.clone().color(&BLACK.mix(0.6)),
            ))?;
            y += 22;
        }
        legend_area.draw(&Text::new(
            format!("{} events", s.events),
            (x0, y + 6),
            font.clone().color(&BLACK.mix(0.6)),
        ))?;
        Ok(())
    }

    /// Marks each series' polyline (see the module documentation): the panels draw their
    /// series in order, one polyline per series, each in its own colour.
    fn tag_series(&self, svg: &str) -> String {
        let mut out = String::with_capacity(svg.len() + 200 * self.panels.len());
        let mut seen = [0usize; 4];
        // Only the panels whose socket neared its TSQ limit draw that series.
        let with_tsq: Vec<&&SocketTimeline> = self.panels.iter().filter(|p| tsq_shown(p)).collect();
        for line in svg.split_inclusive('\n') {
            let series = [
                (QUEUED, "sk_wmem_queued"),
                (ALLOC, "sk_wmem_alloc"),
                (SNDBUF, "sk_sndbuf"),
                (TSQ, "tsq_limit"),
            ]
            .iter()
            .position(|(c, _)| {
                line.starts_with("<polyline")
                    && line.contains(&format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
            });
            let of = |k: usize, n: usize| -> Option<&SocketTimeline> {
                if k == 3 {
                    with_tsq.get(n).map(|p| **p)
                } else {
                    self.panels.get(n).copied()
                }
            };
            match series.and_then(|k| of(k, seen[k]).map(|s| (k, s))) {
                Some((k, s)) => {
                    let readings = match k {
                        2 => changes(&s.readings, |r| r.sndbuf).len(),
                        3 => s.tsq_limit.len(),
                        _ => s.readings.len(),
                    };
                    let name = ["sk_wmem_queued", "sk_wmem_alloc", "sk_sndbuf", "tsq_limit"][k];
                    seen[k] += 1;
                    out.push_str("<polyline");
                    out.push_str(&format!(
                        " class=\"series {name}\" data-sock=\"{}\" data-readings=\"{readings}\"",
                        s.sock_id
                    ));
                    out.push_str(&line["<polyline".len()..]);
                }
                _ => out.push_str(line),
            }
        }
        out
    }
}

enum Swatch {
    Line(RGBColor, u32),
    Tick(RGBColor),
    Shade(RGBColor),
    Cross(RGBColor),
    None,
}

/// The text drawn needs a font: one embedded (DejaVu Sans), not the system's.
fn fonts() -> anyhow::Result<()> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let loaded = *FONT.get_or_init(|| {
        super::bitmap::font().is_some()
            && register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    anyhow::ensure!(loaded, "the embedded font (DejaVu Sans) does not load");
    Ok(())
}

/// A step line through `readings`: each value holds until the next reading, the last until
/// `until` (seconds).
fn step(
    readings: &[Reading],
    value: impl Fn(&Reading) -> f64,
    secs: &impl Fn(u64) -> f64,
    until: f64,
) -> Vec<(f64, f64)> {
    let points: Vec<(u64, f64)> = readings.iter().map(|r| (r.ts_ns, value(r))).collect();
    step_points(&points, |v| v, secs, until)
}

/// A step line through `(ns, value)` points: each value holds until the next point, the last
/// until `until` (seconds).
fn step_points<T: Copy>(
    points: &[(u64, T)],
    value: impl Fn(T) -> f64,
    secs: &impl Fn(u64) -> f64,
    until: f64,
) -> Vec<(f64, f64)> {
    let mut v = Vec::with_capacity(points.len() * 2 + 1);
    for (i, &(ts, val)) in points.iter().enumerate() {
        let x = secs(ts);
        if i > 0 {
            v.push((x, value(points[i - 1].1)));
        }
        v.push((x, value(val)));
    }
    if let Some(&(ts, val)) = points.last() {
        if until > secs(ts) {
            v.push((until, value(val)));
        }
    }
    v
}

/// What the y axis counts: bytes, in one unit for every tick.
#[derive(Clone, Copy)]
struct Unit {
    /// 0 for B, 1 for KiB, 2 for MiB (`render::unit_bytes`).
    power: usize,
}

impl Unit {
    fn for_max(max: f64) -> Unit {
        let power = if max >= 4.0 * 1024.0 * 1024.0 {
            2
        } else if max >= 2048.0 {
            1
        } else {
            0
        };
        Unit { power }
    }

    /// Bytes per unit: the axis counts in units, so its ticks fall on round numbers of them.
    fn bytes(self) -> f64 {
        unit_bytes(self.power)
    }

    /// A tick's label, `v` being in the unit.
    fn label(self, v: f64) -> String {
        bytes_in_unit(v * self.bytes(), self.power)
    }
}

/// `1.234 s`, `56.7 ms`, `890 µs`, `none`.
fn duration(ns: u64) -> String {
    match ns {
        0 => "none".to_owned(),
        n if n >= 1_000_000_000 => format!("{:.3} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n => format!("{:.1} µs", n as f64 / 1e3),
    }
}

/// The readings where `value` changes, and the last.
fn changes(readings: &[Reading], value: impl Fn(&Reading) -> i32) -> Vec<Reading> {
    let mut v: Vec<Reading> = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        if v.last().is_none_or(|l| value(l) != value(r)) || i + 1 == readings.len() {
            v.push(*r);
        }
    }
    v
}

/// At most [`MAX_READINGS`] as they are; more: per pixel column, the first, lowest, highest and
/// last reading (in time order).
fn thin(
    readings: &[Reading],
    value: impl Fn(&Reading) -> i32,
    secs: &impl Fn(u64) -> f64,
    x: &std::ops::Range<f64>,
    width_px: usize,
) -> Vec<Reading> {
    if readings.len() <= MAX_READINGS {
        return readings.to_vec();
    }
    let span = (x.end - x.start).max(f64::MIN_POSITIVE);
    let column =
        |r: &Reading| (((secs(r.ts_ns) - x.start) / span) * width_px.max(1) as f64) as usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < readings.len() {
        let col = column(&readings[i]);
        let mut j = i;
        while j < readings.len() && column(&readings[j]) == col {
            j += 1;
        }
        let group = &readings[i..j];
        let lo = (0..group.len())
            .min_by_key(|&k| value(&group[k]))
            .unwrap_or(0);
        let hi = (0..group.len())
            .max_by_key(|&k| value(&group[k]))
            .unwrap_or(0);
        let mut keep = vec![0, lo, hi, group.len() - 1];
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|k| group[k]));
        i = j;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn register_font_for_tests() {
        fonts().expect("the embedded font loads");
    }

    fn r(ts_ns: u64, queued: i32) -> Reading {
        Reading {
            ts_ns,
            queued,
            alloc: 0,
            sndbuf: 4096,
            snapshot: false,
        }
    }

    #[test]
    fn step_lines_have_two_vertices_per_reading_but_the_first() {
        let rs = [r(0, 1), r(1_000_000_000, 5), r(2_000_000_000, 2)];
        let secs = |ns: u64| ns as f64 / 1e9;
        let v = step(&rs, |r| r.queued as f64, &secs, 2.0);
        assert_eq!(
            v,
            vec![(0.0, 1.0), (1.0, 1.0), (1.0, 5.0), (2.0, 5.0), (2.0, 2.0)]
        );
        // Held to the end.
        let held = step(&rs[..1], |r| r.queued as f64, &secs, 3.0);
        assert_eq!(held, vec![(0.0, 1.0), (3.0, 1.0)]);
        assert_eq!(changes(&rs, |r| r.sndbuf).len(), 2, "first and last");
    }

    #[test]
    fn many_readings_keep_each_columns_extremes() {
        let rs: Vec<Reading> = (0..MAX_READINGS as u64 * 4)
            .map(|i| r(i * 1000, if i == 7777 { 1 << 20 } else { (i % 10) as i32 }))
            .collect();
        let secs = |ns: u64| ns as f64 / 1e9;
        let x_max = secs(rs.last().unwrap().ts_ns);
        let kept = thin(&rs, |r| r.queued, &secs, &(0.0..x_max), 100);
        assert!(kept.len() <= 4 * 101, "{}", kept.len());
        assert!(kept.iter().any(|r| r.queued == 1 << 20), "the spike stays");
        assert!(kept.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }

    #[test]
    fn axis_units_and_durations_read_well() {
        let k = Unit::for_max(150_000.0);
        assert_eq!(
            (k.label(0.0), k.label(20.0), k.label(97.5)),
            ("0B".into(), "20KiB".into(), "97.5KiB".into())
        );
        assert_eq!(Unit::for_max(900.0).label(200.0), "200B");
        assert_eq!(Unit::for_max(8e6).label(2.5), "2.5MiB");
        assert_eq!(duration(0), "none");
        assert_eq!(duration(66_000_000), "66.0 ms");
    }

    #[test]
    fn svg_series_are_tagged_and_png_has_the_size() {
        use crate::{
            cli::FilterArgs,
            pipeline::timeline::tests::{at, timeline},
        };
        use sockmem_common::Hook;
        let events: Vec<_> = (0..50u64)
            .flat_map(|i| {
                [
                    at(Hook::TcpSendmsg, i, |r| {
                        (r.wmem_queued, r.wmem_alloc) = (i as i32 * 1000, i as i32 * 500)
                    }),
                    at(Hook::TcpSendmsg, i, |r| (r.sock_id, r.lport) = (7, 1)),
                ]
            })
            .chain([at(Hook::SendBlocked, 30, |r| r.duration_ns = 5_000_000)])
            .collect();
        let t = timeline(&events, &FilterArgs::default());
        let plot = Plot::choose(&t, &[], 1, "test.smrec".into()).unwrap();
        assert_eq!((plot.panels.len(), plot.left_out), (1, 1));
        let svg = plot.svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("XML");
        for (class, points) in [
            // Held from the last reading (49 ms) to the recording's end (1 s).
            ("series sk_wmem_queued", 2 * 51),
            ("series sk_sndbuf", 4),
        ] {
            let line = doc
                .descendants()
                .find(|n| n.attribute("class") == Some(class))
                .unwrap_or_else(|| panic!("{class} in {svg}"));
            assert_eq!(line.attribute("data-sock"), Some("769"));
            let n = line.attribute("points").unwrap().split_whitespace().count();
            assert_eq!(n, points, "{class}");
        }
        assert!(svg.contains("1 more not shown"));
        let two = Plot::choose(&t, &[7, 769], 6, "t".into()).unwrap();
        assert_eq!(two.size(), (1200, 640));
        let png = two.png().unwrap();
        let info = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        assert_eq!((info.info().width, info.info().height), (1200, 640));
        let err = Plot::choose(&t, &[8], 6, "t".into())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("socket 8") && err.contains("769, 7"), "{err}");
    }

    #[test]
    fn the_format_is_the_extension() {
        use std::path::Path;
        assert_eq!(Format::of(Path::new("a.SVG")).unwrap(), Format::Svg);
        assert_eq!(Format::of(Path::new("a.png")).unwrap(), Format::Png);
        let err = Format::of(Path::new("a.jpg")).unwrap_err().to_string();
        assert!(err.contains(".svg or .png"), "{err}");
    }
}
