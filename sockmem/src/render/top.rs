//! `top`'s outputs: a full-screen table on a terminal (ratatui over crossterm, with keys), or
//! one block of plain lines (or one JSON object) per refresh for a script.
//!
//! The screen is given back (raw mode off, main screen, cursor shown, standard error where it
//! was) on every way out: `q`, Ctrl-C (a key in raw mode), SIGTERM (the run ends as for any
//! command, then [`Screen`]'s drop), an error, and a panic (a hook that restores first, so the
//! panic's message lands on a usable terminal).

use std::{
    io::{self, Write},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc, Once,
    },
};

use ratatui::{
    crossterm::{
        event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table},
    DefaultTerminal, Terminal,
};
use serde_json::json;

use crate::{
    cli::SortKey,
    pipeline::{
        live::{sort_rows, LiveRow, Refresh},
        seed::is_seeded,
    },
    render::{human_bytes, human_ns, Finish},
    session::Output,
};

/// What each refresh's percentiles and rates cover, said in every header.
pub const WINDOW: &str = "rates, blocked and qdisc p99 over the last interval";

/// Where the refreshes go.
pub trait TopSink {
    /// One refresh; `elapsed_s` since the start.
    fn show(&mut self, r: Refresh, elapsed_s: f64) -> io::Result<()>;
    /// Keys pressed since the last call; `false`: the user asked to quit.
    fn keys(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// What the user chose to see.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub sort: SortKey,
    pub reverse: bool,
    pub filter: String,
    /// The filter is being typed (`/` … Enter).
    pub editing: bool,
}

impl View {
    /// The rows shown, in order.
    pub fn rows(&self, r: &Refresh) -> Vec<LiveRow> {
        let mut rows: Vec<LiveRow> = r
            .rows
            .iter()
            .filter(|row| row.contains(&self.filter))
            .cloned()
            .collect();
        sort_rows(&mut rows, self.sort, self.reverse);
        rows
    }

    /// Applies a key; `None`: quit.
    fn key(&mut self, k: KeyEvent) -> Option<()> {
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            return None;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return Some(());
        }
        match k.code {
            KeyCode::Char('q') => return None,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
            }
            _ => {}
        }
        Some(())
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn rate(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "-".to_owned();
    };
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}/s", human_bytes(v.abs().round()))
}

/// The header's first line, item by item (wrapped where the terminal is narrow).
fn header_items(r: &Refresh, elapsed_s: f64, shown: usize) -> Vec<String> {
    vec![
        "sockmem top".to_owned(),
        format!("t={elapsed_s:.1}s"),
        format!("every {:.1}s", r.interval_ns as f64 / 1e9),
        format!("sockets {} (shown {shown})", r.rows.len()),
        format!("queued {}", human_bytes(r.queued_total().max(0) as f64)),
        format!("alloc {}", human_bytes(r.alloc_total().max(0) as f64)),
        format!("events {:.0}/s", r.events_per_s),
        format!("lost {}", r.lost),
    ]
}

/// The terminal table.
pub struct Screen {
    terminal: DefaultTerminal,
    keys: mpsc::Receiver<Event>,
    view: View,
    last: Option<(Refresh, f64)>,
}

/// Standard error while the screen is up (it goes to /dev/null meanwhile: a warning written
/// over the table would stay there), -1 when not up.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static SCREEN_UP: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back; does nothing when it is not taken (so the panic hook, the drop and
/// an error path may all call it).
fn restore_terminal() {
    if !SCREEN_UP.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor dup'ed from standard error in `Screen::enter`.
        unsafe {
            libc::dup2(saved, libc::STDERR_FILENO);
            libc::close(saved);
        }
    }
}

impl Screen {
    /// Whether standard output is a terminal (else: plain lines).
    pub fn wanted() -> bool {
        // SAFETY: isatty on a descriptor number.
        unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 }
    }

    pub fn enter(view: View) -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        // SAFETY: plain descriptor calls; /dev/null is opened and closed here.
        unsafe {
            let saved = libc::dup(libc::STDERR_FILENO);
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
            if saved >= 0 {
                SAVED_STDERR.store(saved, Ordering::SeqCst);
                libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO);
            }
        }
        SCREEN_UP.store(true, Ordering::SeqCst);
        let terminal = (|| {
            enable_raw_mode()?;
            execute!(io::stdout(), EnterAlternateScreen)?;
            Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))
        })()
        .inspect_err(|_| restore_terminal())?;
        // Keys are read on a thread of their own: a blocking read, handed over at each tick.
        let (tx, keys) = mpsc::channel();
        std::thread::Builder::new()
            .name("top-keys".into())
            .spawn(move || {
                while let Ok(ev) = event::read() {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            })?;
        let mut s = Screen {
            terminal,
            keys,
            view,
            last: None,
        };
        s.draw()?;
        Ok(s)
    }

    fn draw(&mut self) -> io::Result<()> {
        let view = &self.view;
        let last = &self.last;
        self.terminal.draw(|f| {
            let Some((r, elapsed_s)) = last else {
                f.render_widget(
                    Paragraph::new("sockmem top: waiting for the first refresh…  (q: quit)"),
                    f.area(),
                );
                return;
            };
            let rows = view.rows(r);
            let filter = if view.editing {
                format!("/{}_", view.filter)
            } else if view.filter.is_empty() {
                "none".to_owned()
            } else {
                format!("\"{}\"", view.filter)
            };
            let width = usize::from(f.area().width);
            let table: Vec<[String; COLUMNS.len()]> = rows.iter().map(cells).collect();
            let shown = fit_columns(width, &table);
            let mut items = header_items(r, *elapsed_s, rows.len());
            items.extend([
                format!(
                    "sort {}{}",
                    view.sort.name(),
                    if view.reverse { " (reversed)" } else { "" }
                ),
                format!("filter {filter}"),
                format!("({WINDOW})"),
            ]);
            let mut lines = pack(&items, width);
            lines.extend(pack(&hidden_note(&shown), width));
            lines.extend(pack(
                &[
                    "keys: s sort".to_owned(),
                    "r reverse".to_owned(),
                    "/ filter (Enter keeps, Esc clears)".to_owned(),
                    "q quit".to_owned(),
                ],
                width,
            ));
            let [head, table_area] =
                Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Min(1)])
                    .areas(f.area());
            f.render_widget(
                Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()),
                head,
            );
            // Numbers to the right of their column, text to the left.
            let align = |c: usize, text: &str, w: usize| match TEXT_MIN[c] {
                0 => format!("{text:>w$}"),
                _ => ellipsize(text, w),
            };
            let header = Row::new(
                shown
                    .iter()
                    .map(|&(c, w)| Cell::from(align(c, COLUMNS[c], w))),
            )
            .style(Style::default().add_modifier(Modifier::REVERSED));
            let body = table.iter().map(|cells| {
                Row::new(
                    shown
                        .iter()
                        .map(|&(c, w)| Cell::from(align(c, &cells[c], w))),
                )
            });
            let widths = shown.iter().map(|&(_, w)| Constraint::Length(w as u16));
            f.render_widget(
                Table::new(body, widths)
                    .header(header)
                    .column_spacing(GAP as u16),
                table_area,
            );
        })?;
        Ok(())
    }
}

/// The table's columns (and the plain lines', but for the socket's two ends split there).
const COLUMNS: [&str; 13] = [
    "SOCKET",
    "PID",
    "COMM",
    "CGROUP",
    "IFACE",
    "QUEUED",
    "ALLOC",
    "SNDBUF",
    "QUEUED/S",
    "ALLOC/S",
    "BLOCKED",
    "QDISC_P99",
    "DROPS",
];

/// Which columns stay when the terminal is too narrow for all: most important first (a column
/// is shown whole or not at all, so a number is never cut).
const PRIORITY: [usize; COLUMNS.len()] = [0, 5, 7, 6, 1, 2, 8, 10, 11, 12, 9, 3, 4];

/// How far a text column may shrink (with `…`); 0: a number, never shortened.
/// The socket keeps room for two IPv4 ends and its protocol, whole.
const TEXT_MIN: [usize; COLUMNS.len()] = [49, 0, 8, 12, 6, 0, 0, 0, 0, 0, 0, 0, 0];

/// Blanks between columns.
const GAP: usize = 1;

/// The columns shown on a terminal `width` wide and each one's width: every number column at
/// the width of its widest value; text columns (socket, comm, cgroup, interface) from
/// [`TEXT_MIN`] up to their widest value, the socket first. Columns that do not fit are left
/// out, least important first.
fn fit_columns(width: usize, table: &[[String; COLUMNS.len()]]) -> Vec<(usize, usize)> {
    let natural: Vec<usize> = (0..COLUMNS.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .chain([COLUMNS[c].len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let least = |c: usize| match TEXT_MIN[c] {
        0 => natural[c],
        m => m.min(natural[c]),
    };
    let mut shown: Vec<usize> = Vec::new();
    let mut used = 0;
    for &c in &PRIORITY {
        let need = least(c) + if shown.is_empty() { 0 } else { GAP };
        if used + need > width && !shown.is_empty() {
            break;
        }
        used += need;
        shown.push(c);
    }
    let mut widths: Vec<(usize, usize)> = shown.iter().map(|&c| (c, least(c))).collect();
    // What is left widens the shortened text columns, most important first.
    let mut left = width.saturating_sub(used);
    for (c, w) in widths.iter_mut() {
        let more = (natural[*c] - *w).min(left);
        *w += more;
        left -= more;
    }
    // A terminal narrower than the socket's least: it is cut to fit, with its mark.
    widths[0].1 = widths[0].1.min(width.max(1));
    widths.sort();
    widths
}

/// `text` in `width` columns: whole, or cut with a visible `…`.
fn ellipsize(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The columns `fit_columns` left out, as the screen says it (nothing when all are shown).
fn hidden_note(shown: &[(usize, usize)]) -> Vec<String> {
    let hidden: Vec<&str> = (0..COLUMNS.len())
        .filter(|c| !shown.iter().any(|(s, _)| s == c))
        .map(|c| COLUMNS[c])
        .collect();
    if hidden.is_empty() {
        return Vec::new();
    }
    vec![
        format!(
            "{} column{} hidden: widen the terminal",
            hidden.len(),
            if hidden.len() == 1 { "" } else { "s" }
        ),
        format!("(hidden: {})", hidden.join(" ")),
    ]
}

/// `items` joined by two blanks, as few lines of at most `width` as they take (an item is
/// never split: a header's numbers stay whole).
fn pack(items: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for item in items {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 2 + item.chars().count() <= width => {
                l.push_str("  ");
                l.push_str(item);
            }
            _ => lines.push(item.clone()),
        }
    }
    lines
}

fn cells(r: &LiveRow) -> [String; COLUMNS.len()] {
    let closed = if r.closed { " (closed)" } else { "" };
    [
        format!("{}{closed}", r.socket()),
        or_dash(r.pid),
        or_dash(r.comm.as_deref()),
        or_dash(r.cgroup.as_deref()),
        or_dash(r.iface.as_deref()),
        r.queued.to_string(),
        r.alloc.to_string(),
        r.sndbuf.to_string(),
        rate(r.queued_rate),
        rate(r.alloc_rate),
        human_ns(r.blocked_ns),
        or_dash(r.sojourn_p99_ns.map(human_ns)),
        r.drops.to_string(),
    ]
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

impl TopSink for Screen {
    fn show(&mut self, r: Refresh, elapsed_s: f64) -> io::Result<()> {
        self.last = Some((r, elapsed_s));
        self.draw()
    }

    fn keys(&mut self) -> io::Result<bool> {
        let mut redraw = false;
        while let Ok(ev) = self.keys.try_recv() {
            match ev {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if self.view.key(k).is_none() {
                        return Ok(false);
                    }
                    redraw = true;
                }
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            self.draw()?;
        }
        Ok(true)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        drop(self);
        Ok(())
    }
}

/// Plain lines for a script: per refresh, a `top` line of totals (`key=value`), a line naming
/// the columns, one line per socket (whitespace-separated, `-` for unknown), an empty line; or
/// with `json`, one object per refresh.
pub struct Lines {
    out: Output,
    view: View,
    json: bool,
}

impl Lines {
    pub fn new(out: Output, view: View, json: bool) -> Lines {
        Lines { out, view, json }
    }
}

/// `-` for an empty or unknown word; spaces (a comm may have them) as `_`.
fn word(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.replace(char::is_whitespace, "_"),
        _ => "-".to_owned(),
    }
}

impl TopSink for Lines {
    fn show(&mut self, r: Refresh, elapsed_s: f64) -> io::Result<()> {
        let rows = self.view.rows(&r);
        let interval_s = r.interval_ns as f64 / 1e9;
        if self.json {
            let sockets: Vec<serde_json::Value> = rows
                .iter()
                .map(|s| {
                    json!({
                        // No identity before its first event (a socket there before the run).
                        "sock": (!is_seeded(s.sock_id)).then_some(s.sock_id),
                        "protocol": s.protocol,
                        "local": s.local.to_string(),
                        "remote": s.remote.to_string(),
                        "pid": s.pid,
                        "comm": s.comm,
                        "cgroup": s.cgroup,
                        "netns": s.netns,
                        "iface": s.iface,
                        "queued": s.queued,
                        "alloc": s.alloc,
                        "sndbuf": s.sndbuf,
                        "queued_rate": s.queued_rate,
                        "alloc_rate": s.alloc_rate,
                        "blocked_ns": s.blocked_ns,
                        "qdisc_p99_ns": s.sojourn_p99_ns,
                        "qdisc_skbs": s.sojourn_count,
                        "drops": s.drops,
                        "drops_new": s.drops_new,
                        "closed": s.closed,
                    })
                })
                .collect();
            let doc = json!({
                "type": "top",
                "time_s": elapsed_s,
                "interval_s": interval_s,
                "window": "interval",
                "sockets_total": r.rows.len(),
                "queued": r.queued_total(),
                "alloc": r.alloc_total(),
                "events_per_s": r.events_per_s,
                "lost": r.lost,
                "sort": self.view.sort.name(),
                "sockets": sockets,
            });
            serde_json::to_writer(&mut self.out, &doc)?;
            writeln!(self.out)?;
        } else {
            writeln!(
                self.out,
                "top time_s={elapsed_s:.3} interval_s={interval_s:.3} sockets={} queued={} alloc={} events_per_s={:.1} lost={} sort={} window=interval",
                r.rows.len(),
                r.queued_total(),
                r.alloc_total(),
                r.events_per_s,
                r.lost,
                self.view.sort.name(),
            )?;
            writeln!(
                self.out,
                "LOCAL REMOTE PROTO PID COMM CGROUP IFACE QUEUED ALLOC SNDBUF QUEUED_RATE ALLOC_RATE BLOCKED_NS QDISC_P99_NS DROPS STATE"
            )?;
            for s in &rows {
                writeln!(
                    self.out,
                    "{} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
                    s.local,
                    s.remote,
                    s.protocol,
                    or_dash(s.pid),
                    word(s.comm.as_deref()),
                    word(s.cgroup.as_deref()),
                    word(s.iface.as_deref()),
                    s.queued,
                    s.alloc,
                    s.sndbuf,
                    or_dash(s.queued_rate.map(|v| v.round() as i64)),
                    or_dash(s.alloc_rate.map(|v| v.round() as i64)),
                    s.blocked_ns,
                    or_dash(s.sojourn_p99_ns),
                    s.drops,
                    if s.closed { "closed" } else { "open" },
                )?;
            }
            writeln!(self.out)?;
        }
        self.out.flush()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sock: u64, port: u16, queued: i64, comm: &str) -> LiveRow {
        LiveRow {
            sock_id: sock,
            protocol: "tcp",
            local: format!("10.0.0.1:{port}").parse().unwrap(),
            remote: "10.0.0.2:5201".parse().unwrap(),
            pid: Some(7),
            comm: Some(comm.to_owned()),
            cgroup: Some("/a".into()),
            netns: None,
            iface: Some("veth0".into()),
            queued,
            alloc: 0,
            sndbuf: 87040,
            queued_rate: None,
            alloc_rate: None,
            blocked_ns: 0,
            sojourn_p99_ns: None,
            sojourn_count: 0,
            drops: 0,
            drops_new: 0,
            closed: false,
        }
    }

    #[test]
    fn keys_sort_filter_and_quit() {
        let r = Refresh {
            rows: vec![row(1, 40000, 10, "a b"), row(2, 40001, 20, "curl")],
            ..Refresh::default()
        };
        let mut v = View::default();
        let ids = |v: &View| v.rows(&r).iter().map(|r| r.sock_id).collect::<Vec<_>>();
        assert_eq!(ids(&v), [2, 1], "queued, largest first");
        let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        v.key(key('r'));
        assert_eq!(ids(&v), [1, 2]);
        for c in "/curl".chars() {
            v.key(key(c));
        }
        v.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(ids(&v), [2]);
        assert!(v.key(key('q')).is_none());
        assert!(v
            .key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
            .is_none());
        assert_eq!(word(Some("a b")), "a_b");
    }

    /// The widths each shown column needs, and the terminal width that holds them all.
    fn total(widths: &[(usize, usize)]) -> usize {
        widths.iter().map(|w| w.1).sum::<usize>() + GAP * (widths.len() - 1)
    }

    #[test]
    fn narrow_terminals_hide_whole_columns_and_never_cut_a_number() {
        let mut r = row(1, 40000, 1_478_100, "a-long-command-name");
        r.sndbuf = 1_880_064;
        r.queued_rate = Some(-123_801.6);
        r.sojourn_p99_ns = Some(9_637_600);
        r.cgroup = Some("/system.slice/some-service-with-a-long-name.service".into());
        let table = vec![cells(&r)];
        let all = fit_columns(1000, &table);
        assert_eq!(all.len(), COLUMNS.len());
        assert!(hidden_note(&all).is_empty());
        let natural = total(&all);
        for width in [40, 60, 80, 100, 120, 160, natural - 1, natural, 300] {
            let shown = fit_columns(width, &table);
            assert!(total(&shown) <= width.max(49), "{width}: {shown:?}");
            assert_eq!(shown[0].0, 0, "the socket always");
            for &(c, w) in &shown {
                let cell = &table[0][c];
                if TEXT_MIN[c] == 0 {
                    assert_eq!(w, cell.len().max(COLUMNS[c].len()), "{}", COLUMNS[c]);
                } else {
                    assert!(w >= TEXT_MIN[c].min(cell.chars().count()), "{}", COLUMNS[c]);
                }
            }
            // Hidden: the least important ones, and said.
            let n = COLUMNS.len() - shown.len();
            for &c in &PRIORITY[..shown.len()] {
                assert!(shown.iter().any(|s| s.0 == c), "{width}: {shown:?}");
            }
            let note = hidden_note(&shown);
            assert_eq!(note.is_empty(), n == 0, "{width}: {note:?}");
            if n > 0 {
                assert!(note[0].starts_with(&format!("{n} column")), "{note:?}");
            }
        }
        // At 120 the numbers asked for are whole; the cgroup shortened with a mark.
        let shown = fit_columns(120, &table);
        let names: Vec<&str> = shown.iter().map(|s| COLUMNS[s.0]).collect();
        assert!(
            names.contains(&"QUEUED") && names.contains(&"SNDBUF"),
            "{names:?}"
        );
        assert_eq!(ellipsize("/system.slice/x", 8), "/system…");
        assert_eq!(ellipsize("curl", 8), "curl");
        assert_eq!(rate(Some(-123_801.6)), "-120.9KiB/s");
    }

    #[test]
    fn the_header_wraps_between_items() {
        let items: Vec<String> = ["sockmem top", "t=1.0s", "queued 1.4MiB", "lost 0"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            pack(&items, 200),
            ["sockmem top  t=1.0s  queued 1.4MiB  lost 0"]
        );
        assert_eq!(
            pack(&items, 24),
            ["sockmem top  t=1.0s", "queued 1.4MiB  lost 0"]
        );
    }
}
