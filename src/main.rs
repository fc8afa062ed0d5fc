//! The `plumb` binary: parses the command line and hands it to [`plumb::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    plumb::cli::main()
}
