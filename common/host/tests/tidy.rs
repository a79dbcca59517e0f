//! Tidy: the pure crates stay pure (DESIGN.md §3). Their product code reads no clock, no
//! ambient randomness and no files, and knows nothing of tokio: time, randomness and I/O are
//! arguments, so the simulator can run them from a seed. Test code (files under `tests/`,
//! `tests.rs` modules, and everything after a `#[cfg(test)]` module) may do as it likes.

use std::path::{Path, PathBuf};

/// The pure crates, by directory from the workspace root.
const PURE_CRATES: &[&str] = &[
    "common/types",
    "common/raft",
    "proto-spec",
    "common/host",
    "participant",
    "coordinator/server",
];

/// What pure code must not use, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "time is an argument (`now_ns`)"),
    ("SystemTime", "physical time is an argument (`wall_ns`)"),
    ("thread_rng", "randomness comes from a seeded `DetRng`"),
    ("std::fs", "bytes reach the disk through `Disk`"),
    ("tokio", "the shell owns the runtime"),
];

fn workspace_root() -> PathBuf {
    // This crate lives at common/host.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_none_or(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The product part of a source file: up to its test module, without comments.
fn product_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

#[test]
fn pure_crates_read_no_clock_no_ambient_randomness_no_files_and_no_tokio() {
    let root = workspace_root();
    let mut violations = Vec::new();
    let mut checked = 0;
    for krate in PURE_CRATES {
        let dir = root.join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        for line in manifest.lines().filter(|l| l.trim_start().starts_with("tokio")) {
            violations.push(format!("{krate}/Cargo.toml: depends on tokio: {line}"));
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            checked += 1;
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in product_lines(&text) {
                for (word, why) in FORBIDDEN {
                    if line.contains(word) {
                        let shown = file.strip_prefix(&root).unwrap_or(&file).display();
                        violations.push(format!("{shown}:{}: `{word}` ({why})", n + 1));
                    }
                }
            }
        }
    }
    assert!(checked > 20, "the tidy check found only {checked} files: wrong root?");
    assert!(violations.is_empty(), "pure crates must stay pure:\n{}", violations.join("\n"));
}

#[test]
fn the_tidy_check_catches_what_it_forbids() {
    let text = "fn f() {\n    // std::fs in a comment is fine\n    let t = Instant::now();\n}\n\
                #[cfg(test)]\nmod tests { fn g() { std::fs::read(\"x\"); } }\n";
    let hits: Vec<usize> = product_lines(text)
        .filter(|(_, l)| FORBIDDEN.iter().any(|(w, _)| l.contains(w)))
        .map(|(n, _)| n + 1)
        .collect();
    assert_eq!(hits, vec![3], "only the product line with Instant::now");
}
