//! `teeserve`: confidential model serving in attested TEEs. One subcommand per role.
//!
//! This binary parses flags, wires the libraries together and renders errors; the work is done
//! in the `teeserve-*` library crates.

mod cmd;
mod util;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    util::init_tracing(cli.verbose);
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", util::render_error(&e));
            e.downcast_ref::<util::Exit>().map(|x| x.0).unwrap_or(2)
        }
    };
    std::process::exit(code);
}
