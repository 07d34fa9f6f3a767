//! Per-hook logic shared by every attach mechanism, one module per stage of the send path. The
//! entry points that call these are generated from the hook registry (see `entry.rs`).

pub mod driver;
pub mod qdisc;
pub mod send;
pub mod tcp;
pub mod wmem;

/// Context programs' handlers (not hooks), named in the registry as `sender::…`.
pub(crate) use crate::sender;
