//! Embeds the eBPF object that `cargo xtask build` produced.
//!
//! The object is built by xtask (nightly, `bpfel-unknown-none`, bpf-linker) rather than here so
//! that toolchain setup stays in one visible place. When it is missing (a plain `cargo build`
//! or `cargo clippy` before `cargo xtask build`), an empty object is embedded and the binary
//! says at run time how to build it properly.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=SOCKMEM_EBPF_OBJ");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let obj = match env::var_os("SOCKMEM_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("../target")
                });
            target.join("bpfel-unknown-none/release/sockmem-ebpf")
        }
    };
    println!("cargo:rerun-if-changed={}", obj.display());
    let embedded = if obj.is_file() {
        obj
    } else {
        println!(
            "cargo:warning=eBPF object {} not found; build with `cargo xtask build`",
            obj.display()
        );
        let empty = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("sockmem-ebpf.missing");
        fs::write(&empty, b"").unwrap();
        empty
    };
    println!("cargo:rustc-env=SOCKMEM_EBPF_OBJ={}", embedded.display());
}
