//! Facts about the running kernel: its BTF, the struct offsets read from it, its symbols, and
//! what it can attach (kprobes, fentry targets).
pub mod btf;
pub mod features;
pub mod offsets;
pub mod symbols;
