//! `teeserve keygen`, `teeserve seal`, `teeserve unseal`.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use teeserve_seal::gramine::{self, PfVersion};
use teeserve_seal::stream::{self, SealOptions};
use teeserve_seal::SealKey;

use crate::util;

/// Sealed-file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// teeserve's streaming AES-256-GCM format (32-byte keys); what `teeserve serve` loads.
    Teeserve,
    /// Gramine protected files, major version 1 (Gramine up to 1.8; 16-byte keys).
    Gramine,
    /// Gramine protected files, major version 2 (Gramine 1.9+; 16-byte keys).
    GramineV2,
}

impl Format {
    /// The protected-file version of the Gramine formats; None for teeserve's.
    fn pf_version(self) -> Option<PfVersion> {
        match self {
            Format::Teeserve => None,
            Format::Gramine => Some(PfVersion::V1),
            Format::GramineV2 => Some(PfVersion::V2),
        }
    }
}

/// Flags of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (raw bytes, owner-only permissions; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Key size in bytes: 32 for the teeserve format, 16 for Gramine protected files.
    #[arg(long, default_value_t = 32, value_parser = parse_size)]
    pub size: usize,
}

/// Flags of `seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The key file (raw 16/32 bytes or hex), as written by `teeserve keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "teeserve")]
    pub format: Format,
    /// Name the sealed file is bound to (teeserve format). For a model directory IN (TF
    /// Serving's `<version>/...` layout), the model name: files are bound to
    /// `<model>/<version>/<file>`, which the server checks against the model and version it
    /// loads (default: IN's directory name). For a single file, the whole name (default: its
    /// file name).
    #[arg(long, value_name = "NAME", conflicts_with = "gramine_path")]
    pub name: Option<String>,
    /// Path bound into a Gramine protected file: the path Gramine will open it under (the mount
    /// URI without `file:`). For a directory IN, the prefix of every file's path. Default: OUT.
    #[arg(long, value_name = "PATH")]
    pub gramine_path: Option<String>,
    /// Input file or directory (a TF Serving model tree), or - for stdin.
    pub input: PathBuf,
    /// Output file or directory, or - for stdout. In directory mode, teeserve-format files get
    /// a `.sealed` suffix (`1/model.onnx` becomes `1/model.onnx.sealed`).
    pub output: PathBuf,
}

/// Flags of `unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Input format (gramine reads both versions).
    #[arg(long, value_enum, default_value = "teeserve")]
    pub format: Format,
    /// Require this bound name (teeserve) or bound path (gramine). For a directory IN, every
    /// file's bound name is checked: with the teeserve format against
    /// `<model>/<version>/<file>`, where NAME is the model (default: the model the first file
    /// was sealed for, which every other file must share); with the Gramine formats against
    /// `<NAME>/<path in IN>` (default NAME: IN as given, which is what `seal --format gramine`
    /// binds by default when IN is its OUT).
    #[arg(long, value_name = "NAME")]
    pub expect_name: Option<String>,
    /// Sealed file or directory, or - for stdin.
    pub input: PathBuf,
    /// Output file or directory, or - for stdout.
    pub output: PathBuf,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s {
        "16" => Ok(16),
        "32" => Ok(32),
        _ => Err(format!("{s:?}: a key is 16 or 32 bytes")),
    }
}

pub fn keygen(a: KeygenArgs) -> Result<i32> {
    let key = SealKey::generate(a.size)?;
    util::write_private_new(&a.out, key.bytes())?;
    eprintln!(
        "wrote a {}-byte key to {} (key id {})",
        a.size,
        a.out.display(),
        key.id_hex()
    );
    Ok(0)
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Writes through a temporary file beside `dest` that is renamed only when `f` succeeds.
fn atomic_write(dest: &Path, f: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let r = f(&mut file).and_then(|_| file.sync_all().context("sync"));
    drop(file);
    match r {
        Ok(()) => std::fs::rename(&tmp, dest)
            .with_context(|| format!("cannot rename to {}", dest.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A progress bar on a terminal for inputs of 64 MiB or more.
fn progress_bar(len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if len < 64 << 20 || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(len).with_message(what.to_owned());
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(pb)
}

/// A progress callback for the parallel file paths: advances the bar of [`progress_bar`].
fn ticker(len: u64, what: &str) -> impl Fn(u64) + Sync {
    let pb = progress_bar(len, what);
    move |n| {
        if let Some(pb) = &pb {
            pb.inc(n)
        }
    }
}

fn progress<'a>(r: impl Read + 'a, len: u64, what: &str) -> Box<dyn Read + 'a> {
    match progress_bar(len, what) {
        Some(pb) => Box::new(pb.wrap_read(r)),
        None => Box::new(r),
    }
}

/// The input as a regular file, for the parallel positional-I/O path (not stdin, pipes or
/// devices).
fn regular_file(input: &Path) -> Option<File> {
    if is_dash(input) {
        return None;
    }
    let f = File::open(input).ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The last component of a directory as given or, for `.` and the like, as resolved.
fn dir_name(dir: &Path) -> Result<String> {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match named(dir) {
        Some(n) => Ok(n),
        None => {
            let abs = std::fs::canonicalize(dir)
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            named(&abs).with_context(|| {
                format!(
                    "{} has no name to use as the model name: give --name",
                    dir.display()
                )
            })
        }
    }
}

/// The bound name of the file at `rel` in the model directory `root` (teeserve format): the
/// one rule of `teeserve_seal::binding`, or an error for files outside version directories,
/// which the server would never load.
fn tree_binding(model: &str, rel: &str, root: &Path) -> Result<String> {
    teeserve_seal::binding::in_model_tree(model, rel).with_context(|| {
        format!(
            "{}: {rel} is not inside a version directory (a model directory holds <version>/<files>, \
             as TF Serving lays it out); seal each model's directory on its own",
            root.display()
        )
    })
}

/// The model a sealed teeserve tree was sealed for, read from its first file's bound name
/// (`<model>/<version>/<file>`): every file is then checked against it and against its place.
fn model_of_tree(root: &Path, files: &[PathBuf]) -> Result<String> {
    let first = files
        .first()
        .with_context(|| format!("{} holds no files", root.display()))?;
    let path = root.join(first);
    let mut head = Vec::new();
    File::open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take((stream::MAX_NAME + 1024) as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (header, _) = stream::SealedHeader::parse(&head)
        .with_context(|| format!("cannot unseal {}", path.display()))?;
    let rel = rel_name(first);
    let plain = rel.strip_suffix(".sealed").unwrap_or(&rel);
    header
        .name
        .strip_suffix(&format!("/{plain}"))
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "cannot unseal {}: bound name mismatch: the file is sealed for {:?}, which is not \
                 <model>/{plain} (give the model with --expect-name)",
                path.display(),
                header.name
            )
        })
}

fn rel_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn seal_one(key: &SealKey, format: Format, bound: &str, input: &Path, output: &Path) -> Result<()> {
    if !is_dash(output) {
        if let Some(f) = regular_file(input) {
            let tick = ticker(f.metadata()?.len(), "sealing");
            return atomic_write(output, |out| {
                match format.pf_version() {
                    None => {
                        stream::seal_file(key, bound, &f, out, &SealOptions::default(), &tick)?;
                    }
                    Some(v) => gramine::encrypt_file_at(key, bound, &f, out, v, &tick)?,
                }
                Ok(())
            });
        }
    }
    let (len, reader): (u64, Box<dyn Read>) = if is_dash(input) {
        let mut all = Vec::new();
        std::io::stdin()
            .read_to_end(&mut all)
            .context("cannot read stdin")?;
        (all.len() as u64, Box::new(std::io::Cursor::new(all)))
    } else {
        let f = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
        let len = f.metadata()?.len();
        (len, Box::new(f))
    };
    let reader = progress(reader, len, "sealing");
    let run = |out: &mut dyn WriteSeek| -> Result<()> {
        match format.pf_version() {
            None => {
                stream::seal(key, bound, len, reader, out, &SealOptions::default())?;
            }
            Some(v) => {
                gramine::encrypt_file(
                    key,
                    bound,
                    len,
                    BufReader::with_capacity(1 << 20, reader),
                    BufWriter::with_capacity(1 << 20, out),
                    v,
                )?;
            }
        }
        Ok(())
    };
    if is_dash(output) {
        let mut buf = std::io::Cursor::new(Vec::new());
        run(&mut buf)?;
        std::io::stdout()
            .write_all(buf.get_ref())
            .context("cannot write stdout")?;
        Ok(())
    } else {
        atomic_write(output, |f| run(f))
    }
}

trait WriteSeek: Write + std::io::Seek {}
impl<T: Write + std::io::Seek> WriteSeek for T {}

pub fn seal(a: SealArgs) -> Result<i32> {
    let key = SealKey::from_file(&a.key).with_context(|| format!("--key {}", a.key.display()))?;
    let check_key = |n: usize, what: &str| -> Result<()> {
        anyhow::ensure!(
            key.len() == n,
            "--key {} has {} bytes; the {what} format needs {n} (teeserve keygen --size {n})",
            a.key.display(),
            key.len()
        );
        Ok(())
    };
    match a.format {
        Format::Teeserve => check_key(32, "teeserve")?,
        _ => check_key(16, "gramine")?,
    }
    if !is_dash(&a.input) && a.input.is_dir() {
        anyhow::ensure!(
            !is_dash(&a.output),
            "a directory cannot be sealed to stdout"
        );
        let files = files_under(&a.input)?;
        let model = match &a.name {
            Some(n) => n.clone(),
            None => dir_name(&a.input)?,
        };
        for rel in &files {
            let name = rel_name(rel);
            let (bound, out) = match a.format {
                Format::Teeserve => (
                    tree_binding(&model, &name, &a.input)?,
                    a.output.join(format!("{}.sealed", rel.display())),
                ),
                _ => {
                    let prefix = a
                        .gramine_path
                        .clone()
                        .unwrap_or_else(|| a.output.display().to_string());
                    (
                        format!("{}/{name}", prefix.trim_end_matches('/')),
                        a.output.join(rel),
                    )
                }
            };
            seal_one(&key, a.format, &bound, &a.input.join(rel), &out)?;
        }
        eprintln!(
            "sealed {} files from {} into {}{}",
            files.len(),
            a.input.display(),
            a.output.display(),
            if a.format == Format::Teeserve {
                format!(" (model {model:?})")
            } else {
                String::new()
            }
        );
    } else {
        let bound = match a.format {
            Format::Teeserve => a.name.clone().unwrap_or_else(|| {
                a.input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "stdin".into())
            }),
            _ => a
                .gramine_path
                .clone()
                .unwrap_or_else(|| a.output.display().to_string()),
        };
        seal_one(&key, a.format, &bound, &a.input, &a.output)?;
        if !is_dash(&a.output) {
            eprintln!(
                "sealed {} into {} (bound to {bound:?})",
                a.input.display(),
                a.output.display()
            );
        }
    }
    Ok(0)
}

fn unseal_one(
    key: &SealKey,
    format: Format,
    expect: Option<&str>,
    input: &Path,
    output: &Path,
) -> Result<()> {
    let ctx = || format!("cannot unseal {}", input.display());
    if !is_dash(output) {
        if let Some(f) = regular_file(input) {
            let tick = ticker(f.metadata()?.len(), "unsealing");
            return atomic_write(output, |out| {
                match format.pf_version() {
                    None => {
                        stream::unseal_file(key, &f, out, expect, &tick)?;
                    }
                    Some(_) => {
                        gramine::decrypt_file_at(key, &f, out, expect, &tick)?;
                    }
                }
                Ok(())
            })
            .with_context(ctx);
        }
    }
    let reader: Box<dyn Read> = if is_dash(input) {
        Box::new(std::io::stdin())
    } else {
        let f = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
        let len = f.metadata()?.len();
        progress(f, len, "unsealing")
    };
    let run = |out: &mut dyn Write| -> Result<()> {
        match format {
            Format::Teeserve => {
                stream::unseal(key, reader, out, expect)?;
            }
            _ => {
                gramine::decrypt_file(
                    key,
                    BufReader::with_capacity(1 << 20, reader),
                    BufWriter::with_capacity(1 << 20, out),
                    expect,
                )?;
            }
        }
        Ok(())
    };
    if is_dash(output) {
        // Authenticate everything before a byte of plaintext leaves.
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        run(&mut *buf).with_context(ctx)?;
        std::io::stdout()
            .write_all(&buf)
            .context("cannot write stdout")?;
        Ok(())
    } else {
        atomic_write(output, |f| run(f)).with_context(ctx)
    }
}

/// What a directory unseal has written so far: the files, and the directories it created
/// (shallowest first). Dropped without [`Written::keep`], it removes them all.
struct Written {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    kept: bool,
}

impl Written {
    fn new(root: &Path) -> Self {
        let mut w = Self {
            files: Vec::new(),
            dirs: Vec::new(),
            kept: false,
        };
        w.note_missing(root);
        w
    }

    /// Notes the directories that writing `out` will create.
    fn before(&mut self, out: &Path) {
        if let Some(parent) = out.parent() {
            self.note_missing(parent);
        }
    }

    fn note_missing(&mut self, dir: &Path) {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .filter(|d| !self.dirs.contains(d))
            .collect();
        missing.reverse();
        self.dirs.extend(missing);
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        // Deepest first; a directory that holds something else is left alone.
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

pub fn unseal(a: UnsealArgs) -> Result<i32> {
    let key = SealKey::from_file(&a.key).with_context(|| format!("--key {}", a.key.display()))?;
    if !is_dash(&a.input) && a.input.is_dir() {
        let files = files_under(&a.input)?;
        // Every file is checked against the name its place in the tree gives it, as the server
        // checks the files it loads: two sealed files swapped in the directory are refused.
        let prefix = match (&a.expect_name, a.format) {
            (Some(n), _) => n.clone(),
            (None, Format::Teeserve) => model_of_tree(&a.input, &files)?,
            (None, _) => a.input.display().to_string(),
        };
        // Every output is worked out before a byte is written, and whatever was written is
        // removed when a later file is refused: a refused tree leaves no plaintext behind.
        let mut plan = Vec::with_capacity(files.len());
        for rel in &files {
            let name = rel_name(rel);
            let (out, expected) = match a.format {
                Format::Teeserve => {
                    let plain = name.strip_suffix(".sealed").with_context(|| {
                        format!(
                            "{}: {name} has no .sealed suffix: not a file `teeserve seal` wrote",
                            a.input.display()
                        )
                    })?;
                    (
                        a.output.join(plain),
                        tree_binding(&prefix, plain, &a.input)?,
                    )
                }
                _ => (
                    a.output.join(rel),
                    format!("{}/{name}", prefix.trim_end_matches('/')),
                ),
            };
            plan.push((a.input.join(rel), out, expected));
        }
        let mut written = Written::new(&a.output);
        for (input, out, expected) in &plan {
            written.before(out);
            unseal_one(&key, a.format, Some(expected), input, out)?;
            written.files.push(out.clone());
        }
        written.keep();
        eprintln!(
            "unsealed {} files into {} (bound to {prefix:?})",
            files.len(),
            a.output.display()
        );
    } else {
        unseal_one(
            &key,
            a.format,
            a.expect_name.as_deref(),
            &a.input,
            &a.output,
        )?;
    }
    Ok(0)
}
