//! The userspace data path: ring buffer (`stream`) → records (`decode`) → per-socket deltas
//! (`track`), and the kernel's own view of the traced sockets (`snapshot`); for `hist`, the
//! kernel's histogram maps (`histogram`).
pub mod decode;
pub mod drive;
pub mod filter;
pub mod groups;
pub mod histogram;
pub mod identity;
pub mod live;
pub mod live_sockets;
pub mod names;
pub mod report;
pub mod seed;
pub mod snapshot;
pub mod stream;
pub mod timeline;
pub mod trace;
pub mod track;
pub mod why;
