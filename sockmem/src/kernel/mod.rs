//! Facts about the running kernel: its BTF, the struct offsets read from it, and what it can
//! attach (kprobes, symbols, fentry targets).
pub mod btf;
pub mod features;
pub mod interfaces;
pub mod offsets;
