//! The userspace data path: ring buffer (`stream`) → records (`decode`) → per-socket deltas
//! (`track`); for `hist`, the kernel's histogram maps (`histogram`).
pub mod decode;
pub mod histogram;
pub mod stream;
pub mod track;
