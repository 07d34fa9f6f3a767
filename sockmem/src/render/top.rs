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
        histogram::Unit,
        live::{sort_rows, LiveRow, Refresh},
        seed::is_seeded,
    },
    render::{hist::human, human_ns, Finish},
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
    format!("{sign}{}/s", human(v.abs().round() as u64, Unit::Bytes))
}

fn header_text(r: &Refresh, elapsed_s: f64, shown: usize) -> String {
    format!(
        "sockmem top  t={elapsed_s:.1}s  every {:.1}s  sockets {} (shown {shown})  queued {}  alloc {}  events {:.0}/s  lost {}",
        r.interval_ns as f64 / 1e9,
        r.rows.len(),
        human(r.queued_total().max(0) as u64, Unit::Bytes),
        human(r.alloc_total().max(0) as u64, Unit::Bytes),
        r.events_per_s,
        r.lost,
    )
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
            let [head, table] =
                Layout::vertical([Constraint::Length(3), Constraint::Min(1)]).areas(f.area());
            let Some((r, elapsed_s)) = last else {
                f.render_widget(
                    Paragraph::new("sockmem top: waiting for the first refresh…  (q: quit)"),
                    head,
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
            let lines = vec![
                Line::from(header_text(r, *elapsed_s, rows.len())),
                Line::from(format!(
                    "sort {} {}  filter {filter}  ({WINDOW})",
                    view.sort.name(),
                    if view.reverse { "(reversed)" } else { "" },
                )),
                Line::from("keys: s sort  r reverse  / filter (Enter keeps, Esc clears)  q quit"),
            ];
            f.render_widget(Paragraph::new(lines), head);
            let header = Row::new(COLUMNS.iter().map(|c| Cell::from(*c)))
                .style(Style::default().add_modifier(Modifier::REVERSED));
            let body = rows.iter().map(|row| Row::new(cells(row)));
            let widths = WIDTHS;
            f.render_widget(Table::new(body, widths).header(header), table);
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

/// Each column's width (the socket's takes what is left).
const WIDTHS: [Constraint; COLUMNS.len()] = [
    Constraint::Min(44),
    Constraint::Length(8),
    Constraint::Length(15),
    Constraint::Length(28),
    Constraint::Length(15),
    Constraint::Length(9),
    Constraint::Length(9),
    Constraint::Length(9),
    Constraint::Length(11),
    Constraint::Length(11),
    Constraint::Length(9),
    Constraint::Length(9),
    Constraint::Length(6),
];

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
}
