//! Facts about the running kernel: its BTF, the struct offsets read from it, its symbols, what
//! it can attach (kprobes, fentry targets), its interfaces in every network namespace, and its
//! own view of a socket through sock_diag.
pub mod btf;
pub mod cgroups;
pub mod features;
pub mod interfaces;
pub mod netns;
pub mod offsets;
pub mod owners;
pub mod sampler;
pub mod sock_diag;
pub mod symbols;
