//! `teeserve tls init`: a small CA with a server and a client certificate.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::util;

/// Flags of `tls init`.
#[derive(Debug, Args)]
pub struct TlsInitArgs {
    /// Directory to write ca.pem, ca.key, NAME.pem, NAME.key (and client.pem/.key).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Names of the server certificates to issue (one file pair each).
    #[arg(long = "name", value_name = "NAME", default_values = ["server"])]
    pub names: Vec<String>,
    /// DNS names and IP addresses the server certificates are valid for.
    #[arg(long = "san", value_name = "NAME", default_values = ["localhost", "127.0.0.1"])]
    pub sans: Vec<String>,
    /// Also issue a client certificate (client.pem, client.key) for mutual TLS.
    #[arg(long)]
    pub client: bool,
}

pub fn init(a: TlsInitArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.dir)?;
    let ca = teeserve_tls::make_ca("teeserve owner CA").map_err(anyhow::Error::msg)?;
    std::fs::write(a.dir.join("ca.pem"), &ca.cert_pem)?;
    util::write_private_new(&a.dir.join("ca.key"), ca.key_pem.as_bytes())?;
    for n in &a.names {
        let c = teeserve_tls::issue(&ca, n, &a.sans, false).map_err(anyhow::Error::msg)?;
        std::fs::write(a.dir.join(format!("{n}.pem")), &c.cert_pem)?;
        util::write_private_new(&a.dir.join(format!("{n}.key")), c.key_pem.as_bytes())?;
    }
    if a.client {
        let c = teeserve_tls::issue(&ca, "client", &[], true).map_err(anyhow::Error::msg)?;
        std::fs::write(a.dir.join("client.pem"), &c.cert_pem)?;
        util::write_private_new(&a.dir.join("client.key"), c.key_pem.as_bytes())?;
    }
    eprintln!(
        "wrote a CA and certificates for {:?} (valid for {:?}) to {}",
        a.names,
        a.sans,
        a.dir.display()
    );
    Ok(0)
}
