//! Rebuilds the programs when bpf-linker changes (e.g. reinstalled by `cargo xtask setup` against
//! a newer nightly LLVM): cargo does not know that the final link depends on it.
use std::{env, path::Path};

fn main() {
    // LLVM's BPF backend expands a memset into stores only without `--bpf-expand-memcpy-in-order`
    // (which bpf-linker passes by default): with it, every zeroed array or struct (an address, a
    // command name, an `Extra`) became a call to compiler-builtins' byte-at-a-time `memset`, a
    // loop of 4 instructions per byte, on every event. memcpy is expanded either way.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    }
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
