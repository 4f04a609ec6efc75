//! The command blocks of README.md and docs/*.md, run as written.
//!
//! Every fenced block whose info string is `sh`, `bash`, `shell` or `python` is a command
//! block. The blocks of one document run in order in one shell (`bash -euo pipefail`), in a
//! new temporary directory holding copies of the repository's `models/` and `testdata/`, with
//! the `teeserve` under test first on `PATH`, so that a block sees the files, variables and
//! background servers of the blocks before it, as a reader's terminal would. Python blocks run
//! in that shell too, with the Python environment below. The ports the documents use
//! (4430, 4433, 8500, 8501) are replaced by free loopback ports, so that tests run side by side.
//!
//! A block that cannot run on a developer's machine says so in an HTML comment on the line
//! above it, and these are the only ways a block is not run:
//!
//! - `<!-- docs-test: skip (why) -->`: never run here (SGX or TDX hardware, Gramine, root,
//!   downloads, a whole `cargo` build). Its `teeserve` lines still have their flags checked.
//! - `<!-- docs-test: needs python -->`: a shell block that needs the Python environment (a
//!   Python with tensorflow, tensorflow-serving-api, numpy, requests and the teeserve package:
//!   `TEESERVE_PYTHON`, else the virtualenv of `TEESERVE_TENSORFLOW_LIB`, else
//!   `~/.cache/teeserve-pyclients`, which `.ci/run` makes). Python blocks need it too. Without
//!   it these blocks are skipped, each named on stderr with the reason
//!   (`TEESERVE_REQUIRE_TENSORFLOW=1`, as in `.ci/run`, makes that a failure).
//!
//! Two more directives help a block prove something: `<!-- docs-test: given COMMANDS -->` runs
//! hidden commands first (the files its prose says the reader has), and
//! `<!-- docs-test: expect TEXT -->` requires TEXT in what the block prints.
//!
//! A block that fails fails the test, naming the document, the line and its output. Nothing
//! reaches beyond loopback: blocks that download are marked skip.
mod harness;
use harness::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// How long the blocks of one document may take together.
const DOCUMENT_SECONDS: u32 = 600;

/// The ports the documents use, each replaced by a free loopback port per document.
const PORTS: [&str; 4] = ["4430", "4433", "8500", "8501"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Shell,
    Python,
}

#[derive(Debug)]
struct Block {
    /// `README.md:30`: the document and the line of the opening fence.
    place: String,
    kind: Kind,
    code: String,
    skip: Option<String>,
    needs_python: bool,
    given: Vec<String>,
    expect: Vec<String>,
}

enum Directive {
    Skip(String),
    NeedsPython,
    Given(String),
    Expect(String),
}

fn directive(text: &str, place: &str) -> Result<Directive, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("skip") {
        let reason = rest.trim();
        let reason = reason
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or("")
            .trim();
        if reason.is_empty() {
            return Err(format!("{place}: `skip` needs a reason: skip (why)"));
        }
        return Ok(Directive::Skip(reason.to_owned()));
    }
    if text == "needs python" {
        return Ok(Directive::NeedsPython);
    }
    if let Some(rest) = text.strip_prefix("given") {
        return Ok(Directive::Given(rest.trim().to_owned()));
    }
    if let Some(rest) = text.strip_prefix("expect ") {
        let rest = rest.trim();
        let rest = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(rest);
        return Ok(Directive::Expect(rest.to_owned()));
    }
    Err(format!(
        "{place}: unknown docs-test directive {text:?} (skip (why), needs python, given, expect)"
    ))
}

/// A fence's kind from its info string: None for blocks that are not commands (json, toml,
/// text, diagrams).
fn kind(info: &str) -> Option<Kind> {
    match info.split_whitespace().next().unwrap_or("") {
        "sh" | "bash" | "shell" => Some(Kind::Shell),
        "python" | "py" => Some(Kind::Python),
        _ => None,
    }
}

/// The command blocks of a Markdown document, with the directives above them.
fn blocks(name: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut pending: Vec<(usize, Directive)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("<!-- docs-test:") {
            let place = format!("{name}:{}", i + 1);
            let mut body = String::new();
            let mut rest = rest.to_owned();
            loop {
                if let Some(end) = rest.find("-->") {
                    body.push_str(&rest[..end]);
                    break;
                }
                body.push_str(&rest);
                body.push('\n');
                i += 1;
                rest = lines
                    .get(i)
                    .ok_or_else(|| format!("{place}: docs-test comment without -->"))?
                    .to_string();
            }
            pending.push((i + 1, directive(&body, &place)?));
            i += 1;
            continue;
        }
        let fence: String = trimmed.chars().take_while(|c| *c == '`').collect();
        if fence.len() >= 3 {
            let indent = line.len() - trimmed.len();
            let info = &trimmed[fence.len()..];
            let start = i + 1;
            let mut code = String::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with(fence.as_str()) {
                let l = lines[i];
                let strip = l.len() - l.trim_start().len();
                code.push_str(&l[strip.min(indent)..]);
                code.push('\n');
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("{name}:{start}: the block is never closed"));
            }
            i += 1;
            let place = format!("{name}:{start}");
            let Some(kind) = kind(info) else {
                if let Some((at, _)) = pending.first() {
                    return Err(format!(
                        "{name}:{at}: a docs-test directive above a block that is not a command block ({place})"
                    ));
                }
                continue;
            };
            let mut block = Block {
                place,
                kind,
                code,
                skip: None,
                needs_python: kind == Kind::Python,
                given: Vec::new(),
                expect: Vec::new(),
            };
            for (_, d) in pending.drain(..) {
                match d {
                    Directive::Skip(why) => block.skip = Some(why),
                    Directive::NeedsPython => block.needs_python = true,
                    Directive::Given(cmds) => block.given.push(cmds),
                    Directive::Expect(text) => block.expect.push(text),
                }
            }
            out.push(block);
            continue;
        }
        if !(trimmed.is_empty() || trimmed.starts_with("<!--")) {
            if let Some((at, _)) = pending.first() {
                return Err(format!(
                    "{name}:{at}: a docs-test directive not followed by a code block"
                ));
            }
        }
        i += 1;
    }
    if let Some((at, _)) = pending.first() {
        return Err(format!(
            "{name}:{at}: a docs-test directive not followed by a code block"
        ));
    }
    Ok(out)
}

/// `text` with each of `ports` replaced by its own free loopback port, where it stands alone
/// (not inside a longer number).
fn replace_ports(text: &str) -> String {
    let mut out = text.to_owned();
    for port in PORTS {
        let new = free_port().to_string();
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(port) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + port.len()..].chars().next();
            let alone = !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit());
            result.push_str(&rest[..at]);
            result.push_str(if alone { &new } else { port });
            rest = &rest[at + port.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// The Python the blocks run with, or why there is none.
fn python() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let candidate = if let Some(p) = std::env::var_os("TEESERVE_PYTHON") {
            PathBuf::from(p)
        } else if let Some(p) = std::env::var_os("TEESERVE_TENSORFLOW_LIB")
            .map(PathBuf::from)
            .and_then(|lib| {
                lib.ancestors()
                    .map(|a| a.join("bin/python"))
                    .find(|p| p.is_file())
            })
        {
            p
        } else {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_default();
            cache.join("teeserve-pyclients/bin/python")
        };
        if !candidate.is_file() {
            return Err(format!(
                "no Python environment at {} (set TEESERVE_PYTHON, or run .ci/run once)",
                candidate.display()
            ));
        }
        let modules = "tensorflow, tensorflow_serving.apis, grpc, numpy, requests, teeserve";
        let check = Command::new(&candidate)
            .args(["-c", &format!("import {modules}")])
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .map_err(|e| format!("{}: {e}", candidate.display()))?;
        if !check.status.success() {
            let err = String::from_utf8_lossy(&check.stderr);
            return Err(format!(
                "{} cannot import {modules}: {}",
                candidate.display(),
                err.lines().last().unwrap_or("")
            ));
        }
        Ok(candidate)
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

const MARK: &str = "@@docs-test ";
const PY_END: &str = "DOCS_TEST_PYTHON_END";

/// What running a document's blocks gave.
struct Ran {
    ran: Vec<String>,
    skipped: Vec<(String, String)>,
}

/// Runs the command blocks of the document at `rel` (relative to the repository) in order, in
/// a new directory; panics naming the block that failed.
fn run_document(rel: &str) -> Ran {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    let blocks = blocks(rel, &replace_ports(&text)).unwrap_or_else(|e| panic!("{e}"));
    let needs_python = blocks.iter().any(|b| b.needs_python && b.skip.is_none());
    let python = needs_python.then(python);
    let mut script = String::from("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    let mut ran = Ran {
        ran: Vec::new(),
        skipped: Vec::new(),
    };
    let mut by_place = HashMap::new();
    for b in &blocks {
        if let Some(why) = &b.skip {
            ran.skipped.push((b.place.clone(), why.clone()));
            continue;
        }
        if let (true, Some(Err(why))) = (b.needs_python, python) {
            ran.skipped.push((b.place.clone(), why.clone()));
            continue;
        }
        script.push_str(&format!(
            "echo '{MARK}{p}'; echo '{MARK}{p}' >&2\n",
            p = b.place
        ));
        for g in &b.given {
            script.push_str(g);
            script.push('\n');
        }
        match b.kind {
            Kind::Shell => script.push_str(&b.code),
            Kind::Python => {
                assert!(!b.code.contains(PY_END), "{}", b.place);
                script.push_str(&format!(
                    "\"$DOCS_TEST_PYTHON\" - <<'{PY_END}'\n{}{PY_END}\n",
                    b.code
                ));
            }
        }
        ran.ran.push(b.place.clone());
        by_place.insert(b.place.clone(), b);
    }
    for (place, why) in &ran.skipped {
        eprintln!("skipped: {place} ({why})");
    }
    if let Some(Err(why)) = python {
        teeserve_testkit::absent::<()>(
            &format!("{rel}: its Python blocks did not run: {why}"),
            "TEESERVE_REQUIRE_TENSORFLOW",
        );
    }
    if ran.ran.is_empty() {
        return ran;
    }

    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("models"), &dir.path().join("models"));
    copy_dir(&repo().join("testdata"), &dir.path().join("testdata"));
    let mut path = vec![bin().parent().unwrap().to_path_buf()];
    if let Some(Ok(py)) = python {
        path.push(py.parent().unwrap().to_path_buf());
    }
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", &DOCUMENT_SECONDS.to_string()])
        .args(["bash", "-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", std::env::join_paths(path).unwrap())
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        // A reader's shell has none of these; the blocks say what they need.
        .env_remove("RUST_LOG")
        .env_remove("TEESERVE_SIM_DIR")
        .env_remove("TEESERVE_TENSORFLOW_LIB")
        .env_remove("TEESERVE_ONNXRUNTIME_LIB");
    if let Some(Ok(py)) = python {
        cmd.env("DOCS_TEST_PYTHON", py);
    }
    let out = cmd.output().expect("run bash under timeout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = |s: &str| {
        s.rfind(MARK)
            .map(|at| s[at + MARK.len()..].lines().next().unwrap_or("").to_owned())
    };
    if !out.status.success() {
        let place = last(&stderr).unwrap_or_else(|| "(before the first block)".into());
        let code = by_place.get(&place).map(|b| b.code.as_str()).unwrap_or("");
        let why = match out.status.code() {
            Some(124) | Some(137) => format!("timed out after {DOCUMENT_SECONDS} s"),
            c => format!("exited with {c:?}"),
        };
        let hint = match (by_place.get(&place).map(|b| b.kind), python) {
            (Some(Kind::Python), Some(Ok(py))) => format!(
                "\n(Python blocks import the teeserve package installed for {}; .ci/run builds \
                 it from this tree before the tests, and an older build may not match the server)",
                py.display()
            ),
            _ => String::new(),
        };
        panic!(
            "{place} failed ({why}): the block\n{code}\n--- stdout\n{}\n--- stderr\n{}{hint}",
            tail(&since(&stdout, &place)),
            tail(&since(&stderr, &place))
        );
    }
    for b in by_place.values() {
        let printed = between(&stdout, &b.place);
        for e in &b.expect {
            assert!(
                printed.contains(e.as_str()),
                "{}: expected {e:?} in what the block printed:\n{printed}",
                b.place
            );
        }
    }
    eprintln!("{rel}: ran {}", ran.ran.join(", "));
    ran
}

/// What was printed from `place`'s mark on.
fn since(s: &str, place: &str) -> String {
    let mark = format!("{MARK}{place}\n");
    s.find(&mark)
        .map(|at| s[at + mark.len()..].to_owned())
        .unwrap_or_else(|| s.to_owned())
}

/// What was printed between `place`'s mark and the next block's.
fn between(s: &str, place: &str) -> String {
    let rest = since(s, place);
    match rest.find(MARK) {
        Some(end) => rest[..end].to_owned(),
        None => rest,
    }
}

fn tail(s: &str) -> String {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

#[test]
fn readme_blocks_run_as_written() {
    let ran = run_document("README.md");
    // The walkthrough (the broker's audit log says it ran) is among them.
    assert!(
        ran.ran.len() >= 2,
        "README.md ran only {:?} (skipped {:?})",
        ran.ran,
        ran.skipped
    );
}

#[test]
fn docs_blocks_run_as_written() {
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "{docs:?}");
    for doc in docs {
        run_document(&doc);
    }
}

/// The README's first block (`cargo run --release -- demo`) is skipped above: it builds the
/// release binary. The demo itself runs here.
#[test]
fn the_demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_in(dir.path(), &["demo"]).ok();
    assert!(r.stdout.contains("accuracy: "), "{}", r.stdout);
}

/// The subcommands `teeserve <path> --help` lists under "Commands:" (without `help`).
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = run(&args).ok().stdout;
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The `teeserve` command lines a document shows: in inline code (`teeserve seal --key K`, or
/// `predict --fresh-nonce`) and in shell blocks, run or not. Each is (where, its words after
/// `teeserve`).
fn command_lines(name: &str, text: &str, top: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<(String, bool)> = None;
    let mut shell_line = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks: String = trimmed.chars().take_while(|c| *c == '`').collect();
        match &fence {
            None if ticks.len() >= 3 => {
                let shell = kind(&trimmed[ticks.len()..]) == Some(Kind::Shell);
                fence = Some((ticks, shell));
                prose.push('\n');
                continue;
            }
            Some((f, _)) if trimmed.trim_end() == f.as_str() => {
                fence = None;
                prose.push('\n');
                continue;
            }
            Some((_, shell)) => {
                if *shell {
                    shell_line.push_str(trimmed.trim_end_matches('\\'));
                    shell_line.push(' ');
                    if !trimmed.ends_with('\\') {
                        let words: Vec<&str> = shell_line.split_whitespace().collect();
                        for (i, w) in words.iter().enumerate() {
                            let command_position = i == 0
                                || matches!(words[i - 1], "|" | "&&" | "||" | ";" | "nice" | "if");
                            if command_position && (*w == "teeserve" || w.ends_with("/teeserve")) {
                                let args = words[i + 1..]
                                    .iter()
                                    .take_while(|w| {
                                        !matches!(**w, "|" | "&&" | "||" | ";" | "&" | ">" | "<")
                                            && !w.starts_with('#')
                                            && !w.starts_with("2>")
                                    })
                                    .map(|w| w.to_string())
                                    .collect();
                                out.push((format!("{name}:{}", n + 1), args));
                            }
                        }
                        shell_line.clear();
                    }
                }
                prose.push('\n');
                continue;
            }
            None => {}
        }
        prose.push_str(line);
        prose.push('\n');
    }
    for paragraph in prose.split("\n\n") {
        for (i, span) in paragraph.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            let words: Vec<String> = span.split_whitespace().map(str::to_owned).collect();
            let args = match words.first().map(String::as_str) {
                Some("teeserve") => words[1..].to_vec(),
                Some(w)
                    if top.iter().any(|t| t == w)
                        && words.get(1).is_some_and(|f| f.starts_with("--")) =>
                {
                    words
                }
                _ => continue,
            };
            out.push((format!("{name}: `{span}`"), args));
        }
    }
    out
}

/// Every `teeserve` command line in README.md and docs/, run or not, names an existing
/// subcommand and only flags that subcommand's `--help` lists, spelled as it lists them (not
/// an alias that is still accepted), so that a reader finds in `--help` what the docs say.
#[test]
fn every_teeserve_command_in_the_docs_uses_existing_flags() {
    let mut docs = vec!["README.md".to_owned()];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n.ends_with(".md") {
            docs.push(format!("docs/{n}"));
        }
    }
    let top = subcommands(&[]);
    assert!(top.len() >= 10, "{top:?}");
    let mut nested: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    let mut helps: HashMap<Vec<String>, String> = HashMap::new();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for (place, args) in command_lines(doc, &text, &top) {
            let Some(sub) = args.first() else { continue };
            if !top.contains(sub) {
                if sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    wrong.push(format!("{place}: no subcommand {sub:?}"));
                }
                continue;
            }
            // `kbs log prove`: down the subcommands as long as the words name one.
            let mut path = vec![sub.clone()];
            while let Some(next) = args.get(path.len()) {
                let subs = nested.entry(path.clone()).or_insert_with(|| {
                    subcommands(&path.iter().map(String::as_str).collect::<Vec<_>>())
                });
                if !subs.contains(next) {
                    break;
                }
                path.push(next.clone());
            }
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                let flag = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                let help = helps.entry(path.clone()).or_insert_with(|| {
                    let mut a: Vec<&str> = path.iter().map(String::as_str).collect();
                    a.push("--help");
                    run(&a).ok().stdout
                });
                checked += 1;
                let ok = help.lines().any(|l| {
                    let l = l.trim_start();
                    // `-v, --verbose`: the short form first.
                    let l = match l.as_bytes() {
                        [b'-', c, b',', b' ', ..] if c.is_ascii_alphabetic() => &l[4..],
                        _ => l,
                    };
                    l.strip_prefix(flag)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=', '[']))
                });
                if !ok {
                    wrong.push(format!(
                        "{place}: `teeserve {} --help` lists no flag {flag}",
                        path.join(" ")
                    ));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} flags found in {docs:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
