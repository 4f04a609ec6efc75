//! Helpers shared by the subcommands: error rendering, time parsing, file I/O with context.

use std::path::Path;

use anyhow::{Context, Result};

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit(pub i32, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// Fails with exit code 1 (refused / not verified) and this message.
pub fn refuse(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit(1, msg.into()))
}

/// Renders an error chain on one line: outermost context first.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Sets up logging to stderr, the access log in batches ([`crate::log_sink`]); `RUST_LOG`
/// overrides the level.
pub fn init_tracing(verbose: u8) {
    // h2 warns of each peer that breaks its limits (resets, pings): a peer can make as many
    // such lines as it opens connections, so they are logged only with `-v` or RUST_LOG.
    let level = match verbose {
        0 => "warn,h2=error,teeserve=info,teeserve_kbs=info,teeserve_serving=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_sink::Sink)
        // Colours only on a terminal: a log file or a collector gets plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(crate::log_format::LineFormat::default())
        .try_init();
}

/// Reads a file, naming it on failure.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a text file, naming it on failure.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Parses a time given as Unix seconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| anyhow::anyhow!("--at {s:?} is neither Unix seconds nor an RFC 3339 time"))
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Writes a file with owner-only permissions, refusing to overwrite.
pub fn write_private_new(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        if path.exists() {
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            )
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes one line of output to stdout. A reader that went away (`teeserve predict ... | head`)
/// is not an error: the rest of the output is dropped quietly instead of panicking as `println!`
/// does.
pub fn say(line: impl std::fmt::Display) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing stdout"),
        _ => Ok(()),
    }
}
