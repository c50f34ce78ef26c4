//! The `tether` binary: parse the command line, hand over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    server::cli::dispatch(server::cli::Cli::parse())
}
