//! `palisade-ctl`: parses arguments, runs the command, maps the outcome to
//! an exit code. Everything else is in the library.
#![forbid(unsafe_code)]

use clap::Parser;
use palisade_ctl::{Cli, run};

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => palisade_ctl::exit_code::OK,
        Err(error) => {
            eprintln!("palisade-ctl: {error}");
            error.exit_code()
        }
    };
    std::process::exit(code);
}
