//! Golden tests: every `tests/fixtures/cmdline/NAME.cmdline` (raw bytes, as `/proc/cmdline`
//! would hold them) parses to the settings or errors in `NAME.expected`.
//! Re-bless with `UPDATE_EXPECT=1 cargo test -p pxeimage` and review the diff.

use std::path::PathBuf;

use pxeimage::cmdline;

fn render(raw: &[u8]) -> String {
    match cmdline::parse_bytes(raw) {
        Ok(cfg) => cfg.render(),
        Err(errs) => errs
            .0
            .iter()
            .map(|e| format!("error[{}] {e}\n", e.code()))
            .collect(),
    }
}

#[test]
fn cmdline_fixtures_match_expected() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmdline");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cmdline"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "fixtures missing in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let got = render(&std::fs::read(input).unwrap());
        let expected_path = input.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != want {
            failures.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got}",
                input.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_never_echo_the_token() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmdline");
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "cmdline") {
            let out = render(&std::fs::read(&p).unwrap());
            assert!(!out.contains(token), "{} leaks the token", p.display());
            assert!(
                !out.contains(&token[..32]),
                "{} leaks part of the token",
                p.display()
            );
        }
    }
}
