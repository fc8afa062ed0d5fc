//! The `plumb` binary: parses the command line and hands it to [`plumb::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    no_error_backtraces();
    plumb::cli::main()
}

/// plumb says what failed in words and never prints an error's backtrace, yet with
/// `RUST_BACKTRACE=1` set (as operators often set it for Rust programs) every error a library
/// makes would capture one: Sequoia's, among them the routine ones of parsing a key, each
/// walking the stack through the binary's unwinding tables (a megabyte more resident in the
/// agent). A panic still prints its backtrace; `RUST_LIB_BACKTRACE`, when set, still decides.
fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the process's first step, before any other thread exists. Services and their
        // probes start with a minimal environment of their own (`target::local::process`); the
        // other programs plumb starts (git, gpg, tar) are not Rust and ignore the variable.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") }
    }
}
