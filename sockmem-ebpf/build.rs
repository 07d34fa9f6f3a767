//! Rebuilds the programs when bpf-linker changes (e.g. reinstalled by `cargo xtask setup` against
//! a newer nightly LLVM): cargo does not know that the final link depends on it.
use std::{env, path::Path};

fn main() {
    let path = env::var_os("PATH").unwrap_or_default();
    match env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| Path::is_file(p))
    {
        Some(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        // Only the link for bpfel-unknown-none needs it; sockmem's build script says how to get it.
        None => println!("cargo:rerun-if-env-changed=PATH"),
    }
}
