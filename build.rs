//! Links the binary's code in the order the agent runs it (`link/symbol-order.txt`, written by
//! `scripts/symbol-order`): the functions an agent runs sit together, so the pages it keeps
//! resident hold its own code rather than the neighbours of each function it calls
//! (docs/performance.md, "The agent's memory").

use std::path::Path;

fn main() {
    const ORDER: &str = "link/symbol-order.txt";
    println!("cargo::rerun-if-changed={ORDER}");
    println!("cargo::rerun-if-env-changed=PLUMB_LINK_MAP");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join(ORDER);
    if links_with_bundled_lld() {
        if order.exists() {
            // Symbols of another build (another toolchain, profile or dependency version) are
            // not found and are left where they are: a stale order costs memory, never
            // correctness.
            println!("cargo::rustc-link-arg-bins=-Xlinker");
            println!("cargo::rustc-link-arg-bins=--symbol-ordering-file={}", order.display());
            println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        // The address of every symbol, for `scripts/symbol-order` to name what a stripped
        // build ran.
        if let Some(map) = std::env::var_os("PLUMB_LINK_MAP") {
            println!("cargo::rustc-link-arg-bins=-Xlinker");
            println!("cargo::rustc-link-arg-bins=-Map={}", map.to_string_lossy());
        }
    }
    // Relative relocations packed (DT_RELR): a start-up table of 1.5 MB read once becomes a few
    // kilobytes. Only where the C library applies them (glibc 2.36 on, which refuses a binary
    // needing it with a clear error), and when building for this machine, whose C library it is.
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && std::env::var("HOST") == std::env::var("TARGET")
        && glibc_at_least(2, 36)
    {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the binary is linked by the lld that rustup's toolchains bundle for x86_64 Linux
/// (the default since Rust 1.90), the one linker here that takes an order of symbols: not when
/// another target, another linker (`linker`, `-C linker-features=-lld`, `-fuse-ld`, mold) or a
/// toolchain without the bundled lld (some distributions' builds) is in use.
fn links_with_bundled_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || std::env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "link-self-contained", "fuse-ld", "mold"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = std::process::Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
        .exists()
}

/// Whether this machine's glibc is `major.minor` or later (`getconf GNU_LIBC_VERSION`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(have_major), Some(have_minor)) => (have_major, have_minor) >= (major, minor),
        _ => false,
    }
}
