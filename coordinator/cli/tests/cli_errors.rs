//! The client commands' error paths, against the real `decree` binary: a wrong address, missing
//! certificates and an unreachable cluster each give one line on stderr naming the problem and
//! a non-zero exit — never a panic or a backtrace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn decree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_decree"))
}

/// A fresh directory under the system temp dir.
fn temp_dir(label: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("decree-cli-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A cluster file naming three nodes at `addrs`, and certificates for them and client `cli`.
fn cluster_dir(label: &str, addrs: [&str; 3]) -> PathBuf {
    let dir = temp_dir(label);
    let mut text = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        text.push_str(&format!("[[nodes]]\nid = {}\naddr = \"{addr}\"\n\n", i + 1));
    }
    text.push_str("[[coordinator_groups]]\nid = 100\nreplicas = [1, 2, 3]\n\n");
    text.push_str("[[participant_groups]]\nid = 1\nstart = \"\"\nreplicas = [1, 2, 3]\n");
    std::fs::write(dir.join("cluster.toml"), text).unwrap();
    let out = decree()
        .args(["certs", "--out"])
        .arg(dir.join("certs"))
        .args(["--nodes", "1,2,3", "--clients", "cli"])
        .output()
        .unwrap();
    assert!(out.status.success(), "decree certs failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// Ports nobody listens on (bound and released a moment ago).
fn dead_addrs() -> Vec<String> {
    let sockets: Vec<std::net::UdpSocket> =
        (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().to_string()).collect()
}

fn run(args: &[&str], dir: &Path) -> Output {
    decree()
        .args(args)
        .arg("--cluster")
        .arg(dir.join("cluster.toml"))
        .args(["--timeout", "1.5"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Exit non-zero, exactly one line on stderr, starting `decree: error:` and containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}, stderr {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("decree: error:"), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn missing_certificates_are_one_line_naming_the_directory() {
    let dead = dead_addrs();
    let dir = cluster_dir("nocerts", [&dead[0], &dead[1], &dead[2]]);
    let out = decree()
        .args(["get", "k", "--cluster"])
        .arg(dir.join("cluster.toml"))
        .arg("--certs")
        .arg(dir.join("no-such-certs"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "no-such-certs");
    // A named client without a certificate.
    let out = run(&["get", "k", "--client", "nobody"], &dir);
    assert_one_line_error(&out, "client-nobody");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_malformed_address_is_one_line_naming_the_file() {
    let dir = cluster_dir("badaddr", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    let text = std::fs::read_to_string(dir.join("cluster.toml")).unwrap();
    std::fs::write(dir.join("cluster.toml"), text.replace("127.0.0.1:2", "not-an-address"))
        .unwrap();
    let out = run(&["put", "k", "v"], &dir);
    assert_one_line_error(&out, "cluster.toml");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_cluster_is_one_line_and_a_non_zero_exit_for_every_client_command() {
    let dead = dead_addrs();
    let dir = cluster_dir("unreachable", [&dead[0], &dead[1], &dead[2]]);
    for args in [
        &["get", "k"][..],
        &["put", "k", "v"],
        &["txn", "put", "a", "1", "get", "b"],
        &["txn-status", "00000000000000000000000000000001"],
        &["status"],
    ] {
        let started = std::time::Instant::now();
        let out = run(args, &dir);
        assert_one_line_error(&out, "unavailable");
        // It gives up about when asked to, not after the library's default patience.
        assert!(started.elapsed().as_secs() < 10, "{args:?} took {:?}", started.elapsed());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_txn_command_line_is_a_usage_error() {
    let dead = dead_addrs();
    let dir = cluster_dir("usage", [&dead[0], &dead[1], &dead[2]]);
    let out = run(&["txn", "put", "a"], &dir);
    assert_one_line_error(&out, "needs a value");
    let out = run(&["txn-status", "not-hex"], &dir);
    assert_one_line_error(&out, "not a transaction id");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_every_command() {
    let out = decree().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["start", "certs", "get", "put", "txn", "txn-status", "status", "bank", "demo"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "`{command}` missing from --help:\n{text}"
        );
    }
}
