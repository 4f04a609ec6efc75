//! `teeserve`: confidential model serving in attested TEEs. One subcommand per role.
//!
//! This binary parses flags, wires the libraries together and renders errors; the work is done
//! in the `teeserve-*` library crates.
#![forbid(unsafe_code, unused_must_use)]
// Flag doc comments are `--help` text, where URLs are written bare.
#![allow(rustdoc::bare_urls)]

mod cmd;
mod log_format;
mod log_sink;
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
    log_sink::flush();
    std::process::exit(code);
}
