//! Every flag the deployment files pass to teeserve is one the binary accepts.
mod harness;
use harness::*;

fn flags_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("\"--") {
        let rest = &text[i + 1..];
        let flag: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if flag.len() > 2 {
            out.push(flag);
        }
    }
    out
}

#[test]
fn deployment_flags_exist() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let serve_help = run(&["serve", "--help"]).ok().stdout;
    let kbs_help = run(&["kbs", "--help"]).ok().stdout;
    let files = [
        ("gramine/teeserve.manifest.template", &serve_help),
        ("docker/Dockerfile.kbs", &kbs_help),
        ("kubernetes/kbs.yaml", &kbs_help),
    ];
    let mut checked = 0;
    for (f, help) in files {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let flags = flags_in(&text);
        assert!(!flags.is_empty(), "{f}: no flags found");
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}\n"))
                    || help.contains(&format!("{flag} <")),
                "{f}: {flag} is not a flag of teeserve"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
}
