//! `teeserve demo`: the whole flow on loopback with the simulated TEE, as real processes: the
//! owner seals the bundled digits classifier and starts the key broker, the TEE host starts the
//! server (which attests and receives the keys), and the requester checks the server's
//! attestation and sends the held-out digits over gRPC and REST with TLS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verifier};
use teeserve_client::requester::{Connection, RequestTarget};
use teeserve_client::{attested_client_config, check_attestation, fetch_attestation, fresh_nonce};
use teeserve_ratls::Appraiser;
use teeserve_tensor::{self as tensor, Data, Tensor};

const MODEL: &[u8] = include_bytes!("../../../../models/digits/1/model.onnx");
const PIXELS: &[u8] = include_bytes!("../../../../testdata/digits/heldout-pixels.npy");
const LABELS: &[u8] = include_bytes!("../../../../testdata/digits/heldout-labels.npy");

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the working directory (keys, sealed model, audit log) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Working directory (default: a new directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Workdir {
    path: PathBuf,
    keep: bool,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn step(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(80));
    pb.set_message(msg.to_owned());
    if pb.is_hidden() {
        eprintln!("... {msg}");
    }
    pb
}

fn done(pb: ProgressBar, msg: String) {
    if pb.is_hidden() {
        eprintln!("ok  {msg}");
    }
    pb.finish_with_message(format!("ok  {msg}"));
}

fn free_port() -> Result<u16> {
    Ok(teeserve_serving::free_loopback_port()?)
}

/// Starts `teeserve ARGS` and waits for its `listening ...` line.
fn spawn(
    dir: &Path,
    args: &[String],
    children: &mut Children,
    what: &str,
    timeout: Duration,
) -> Result<String> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join(format!("{what}.log")))?;
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start the {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    children.0.push(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(timeout) {
        Ok(line) if line.starts_with("listening") => Ok(line.trim().to_owned()),
        _ => {
            let log = std::fs::read_to_string(dir.join(format!("{what}.log"))).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("error"))
                .unwrap_or(log.lines().last().unwrap_or(""))
                .to_owned();
            anyhow::bail!("the {what} did not start: {last}")
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(a: DemoArgs) -> Result<i32> {
    let started = Instant::now();
    let path = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("teeserve-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let work = Workdir { path, keep: a.keep };
    let dir = work.path.clone();
    let mut children = Children(Vec::new());
    eprintln!("teeserve demo: the whole flow on loopback, with a SIMULATED TEE (no protection, for trying it out)");

    // TEE host: a simulated platform.
    let pb = step(
        "TEE host: creating a simulated SGX platform (Intel-shaped PKI and signed collateral)",
    );
    teeserve_attest::sim::init(
        &dir.join("sim"),
        &teeserve_attest::sim::SimOptions::default(),
    )?;
    done(
        pb,
        format!("simulated platform in {}", dir.join("sim").display()),
    );

    // Owner: keys, TLS, sealed model, policy, key broker.
    let pb =
        step("owner: generating the model key and TLS certificates, sealing the digits classifier");
    let key = teeserve_seal::SealKey::generate(32)?;
    crate::util::write_private_new(&dir.join("model.key"), key.bytes())?;
    let ca = teeserve_tls::make_ca("teeserve demo owner CA").map_err(anyhow::Error::msg)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    std::fs::create_dir_all(dir.join("tls"))?;
    std::fs::write(dir.join("tls/ca.pem"), &ca.cert_pem)?;
    for n in ["kbs", "server"] {
        let c = teeserve_tls::issue(&ca, n, &names, false).map_err(anyhow::Error::msg)?;
        std::fs::write(dir.join(format!("tls/{n}.pem")), &c.cert_pem)?;
        crate::util::write_private_new(&dir.join(format!("tls/{n}.key")), c.key_pem.as_bytes())?;
    }
    let sealed_dir = dir.join("sealed/digits/1");
    std::fs::create_dir_all(&sealed_dir)?;
    let mut sealed = Vec::new();
    teeserve_seal::stream::seal(
        &key,
        &teeserve_seal::binding::model_file("digits", 1, "model.onnx"),
        MODEL.len() as u64,
        MODEL,
        &mut sealed,
        &Default::default(),
    )?;
    std::fs::write(sealed_dir.join("model.onnx.sealed"), &sealed)?;
    done(
        pb,
        format!(
            "model sealed to {} ({} bytes; no plaintext on the host)",
            sealed_dir.join("model.onnx.sealed").display(),
            sealed.len()
        ),
    );

    let pb = step("owner: writing the policy and starting the key broker");
    let measurement = hex::encode(teeserve_attest::sim::measure_self()?);
    let kbs_port = free_port()?;
    let gramine_port = free_port()?;
    std::fs::write(
        dir.join("kbs.toml"),
        format!(
            "listen = \"127.0.0.1:{kbs_port}\"\ngramine_listen = \"127.0.0.1:{gramine_port}\"\ntls_cert = \"tls/kbs.pem\"\ntls_key = \"tls/kbs.key\"\naudit_log = \"audit.jsonl\"\n\
             [collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n\
             [secrets.model-key]\nfile = \"model.key\"\n[secrets.tls-key]\nfile = \"tls/server.key\"\n\
             [[policies]]\nname = \"digits-server\"\nmrenclave = [\"{measurement}\"]\nallow_simulated = true\ntcb_status = [\"UpToDate\"]\nsecrets = [\"model-key\", \"tls-key\"]\n"
        ),
    )?;
    spawn(
        &dir,
        &["kbs".into(), "--config".into(), "kbs.toml".into()],
        &mut children,
        "key broker",
        Duration::from_secs(20),
    )?;
    done(
        pb,
        format!("key broker on 127.0.0.1:{kbs_port}, admitting exactly MRENCLAVE {measurement}"),
    );

    // TEE host: the server attests to the broker, gets the keys, unseals in memory.
    let pb = step(
        "TEE host: starting the server; it attests over RA-TLS and receives the model and TLS keys",
    );
    let (grpc_port, rest_port) = (free_port()?, free_port()?);
    let args: Vec<String> = [
        "serve",
        "--platform",
        "simulated",
        "--sim-dir",
        "sim",
        "--kbs",
        &format!("127.0.0.1:{kbs_port}"),
        "--kbs-ca",
        "tls/ca.pem",
        "--kbs-tls-key-secret",
        "tls-key",
        "--tls-cert",
        "tls/server.pem",
        "--model_name",
        "digits",
        "--model_base_path",
        "sealed/digits",
        "--attestation-collateral",
        "sim/collateral.json",
        "--grpc_bind_address",
        "127.0.0.1",
        "--rest_api_bind_address",
        "127.0.0.1",
        "--port",
        &grpc_port.to_string(),
        "--rest_api_port",
        &rest_port.to_string(),
        "--kbs-retry-seconds",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn(
        &dir,
        &args,
        &mut children,
        "server",
        Duration::from_secs(30),
    )?;
    done(pb, format!("server attested and serving: gRPC 127.0.0.1:{grpc_port}, REST 127.0.0.1:{rest_port} (TLS)"));

    // Requester.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (grpc_lat, rest_lat, correct, total, verdict) = rt.block_on(async {
        let pb = step("requester: checking the server's attestation before sending any data");
        let ca_pem = std::fs::read(dir.join("tls/ca.pem"))?;
        let verifier = teeserve_client::ca_verifier(&ca_pem).map_err(anyhow::Error::msg)?;
        let rest_addr = format!("127.0.0.1:{rest_port}");
        let nonce = fresh_nonce().map_err(anyhow::Error::msg)?;
        let fetched = fetch_attestation(&rest_addr, verifier.clone(), "127.0.0.1", Some(&nonce))
            .await
            .map_err(anyhow::Error::msg)?;
        let v = Verifier::new(TrustAnchor::from_pem(&std::fs::read(
            dir.join("sim/root.pem"),
        )?)?);
        let coll: Collateral =
            serde_json::from_value(fetched.doc.collateral.clone().unwrap_or_default())
                .context("published collateral")?;
        let appraiser = Arc::new(Appraiser::new(
            v.clone(),
            CollateralSource::bundle(&v, &coll)?,
        ));
        let policy = Policy::from_toml(&format!(
            "name = \"requester\"\nmrenclave = [\"{measurement}\"]\nallow_simulated = true\n"
        ))?;
        let verdict = check_attestation(
            &appraiser,
            &policy,
            &fetched,
            Some(&nonce),
            crate::util::now(),
        )
        .map_err(anyhow::Error::msg)?;
        done(
            pb,
            format!(
                "server's TLS key is bound to MRENCLAVE {} (tcb {})",
                verdict
                    .sgx
                    .as_ref()
                    .map(|s| s.mrenclave.clone())
                    .unwrap_or_default(),
                verdict.tcb_status
            ),
        );

        let pixels = tensor::from_npy(PIXELS).map_err(anyhow::Error::msg)?;
        let labels = tensor::from_npy(LABELS).map_err(anyhow::Error::msg)?;
        let Data::I64(labels) = labels.data else {
            anyhow::bail!("labels are not int64")
        };
        let n = pixels.shape[0];
        let target = RequestTarget {
            model: "digits".into(),
            ..Default::default()
        };
        let mut lat = [Vec::new(), Vec::new()];
        let mut correct = 0;
        for (k, rest) in [false, true].into_iter().enumerate() {
            let api = if rest { "REST" } else { "gRPC" };
            let pb = step(&format!(
                "requester: sending {n} held-out digits over {api} with TLS"
            ));
            let alpn: &[&[u8]] = if rest { &[b"http/1.1"] } else { &[b"h2"] };
            // Every data connection must present the attested key, on top of the CA.
            let cfg = Arc::new(
                attested_client_config(
                    &fetched.cert,
                    Some(verifier.clone()),
                    Some((appraiser.clone(), policy.clone())),
                    None,
                    alpn,
                )
                .map_err(anyhow::Error::msg)?,
            );
            let addr = format!("127.0.0.1:{}", if rest { rest_port } else { grpc_port });
            let mut conn = Connection::open(&addr, Some(cfg), "127.0.0.1", rest)
                .await
                .map_err(anyhow::Error::msg)?;
            for (i, label) in labels.iter().enumerate().take(n) {
                let row: Tensor = pixels.slice_rows(i, i + 1);
                let t0 = Instant::now();
                let p = conn
                    .predict(&target, &[("pixels".into(), row)])
                    .await
                    .map_err(|e| anyhow::anyhow!("{api} request {i}: {e}"))?;
                lat[k].push(t0.elapsed().as_secs_f64() * 1e3);
                let class = p
                    .outputs
                    .get("class")
                    .and_then(|c| c.get(0))
                    .and_then(|c| c.as_i64());
                if class == Some(*label) {
                    correct += 1;
                }
                pb.set_message(format!("requester: {api}: {}/{n} digits", i + 1));
            }
            done(pb, format!("{n} digits classified over {api}"));
        }
        let [g, r] = lat;
        Ok::<_, anyhow::Error>((g, r, correct, 2 * n, verdict))
    })?;
    drop(children);
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    let grants = audit.lines().filter(|l| l.contains("\"granted\"")).count();

    let mut summary = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        summary,
        "\nadmitted measurement: MRENCLAVE {measurement} ({} TEE, simulated, tcb {})",
        verdict.tee, verdict.tcb_status
    );
    let _ = writeln!(
        summary,
        "key broker decisions: {grants} granted (audit log: {})",
        dir.join("audit.jsonl").display()
    );
    for (api, l) in [("gRPC+TLS", grpc_lat), ("REST+TLS", rest_lat)] {
        let mut l = l;
        l.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let _ = writeln!(
            summary,
            "latency {api}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms over {} requests",
            percentile(&l, 0.5),
            percentile(&l, 0.95),
            percentile(&l, 0.99),
            l.len()
        );
    }
    let _ = writeln!(
        summary,
        "artefacts: {} (sim/ platform, tls/ certificates, model.key, sealed/ model, kbs.toml, audit.jsonl, *.log){}",
        dir.display(),
        if a.keep { "" } else { " - removed on exit; keep with --keep" }
    );
    let _ = writeln!(
        summary,
        "finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eprint!("{summary}");
    let accuracy = correct as f64 / total as f64;
    crate::util::say(format_args!("accuracy: {:.2}% ({correct}/{total} held-out digits classified correctly over gRPC and REST)", accuracy * 100.0))?;
    if accuracy < 0.9 {
        anyhow::bail!(
            "accuracy {:.2}% is below the 90% the bundled model reaches",
            accuracy * 100.0
        );
    }
    Ok(0)
}
