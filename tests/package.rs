//! The Debian package a standby host installs (`scripts/package`), unpacked into a
//! temporary root as `dpkg` would lay it out: the binary runs from where the package puts
//! it, every man page and completion is where the system looks, and the fetcher's unit
//! names the installed binary. `scripts/package` builds it (`scripts/test` runs it first).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::archive::*;
use crate::common::*;
use walfetch::codec::Codec;

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A man page of the unpacked package, decompressed.
fn man_page(root: &Path, name: &str) -> String {
    let path = root.join(format!("usr/share/man/man1/{name}.1.gz"));
    let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    text(&out)
}

#[test]
fn the_debian_package_installs_a_working_binary_man_pages_completions_and_the_unit() {
    // scripts/test builds the package before the suite (a build inside `cargo test`
    // would wait for cargo's lock): WALFETCH_DEB names it, else the one in target/debian.
    let deb = std::env::var("WALFETCH_DEB").ok().unwrap_or_else(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
        fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().display().to_string())
            .find(|p| p.ends_with(".deb") && p.contains("/walfetch_"))
            .unwrap_or_else(|| panic!("no package in {}: run scripts/package (scripts/test does)", dir.display()))
    });
    let field = |name: &str| {
        let out = Command::new("dpkg-deb").args(["--field", &deb, name]).output().unwrap();
        text(&out).trim().to_string()
    };
    assert_eq!(field("Package"), "walfetch");
    let version = field("Version");
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "Debian's version of this one: {version}"
    );

    let scratch = Scratch::new();
    let root = scratch.dir("root");
    let unpacked = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).output().unwrap();
    assert!(unpacked.status.success(), "{}", stderr(&unpacked));

    // The binary, where the package puts it, names its version and commit and reads an archive.
    let bin = root.join("usr/bin/walfetch");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    let version = text(&version);
    assert_eq!(
        version.trim(),
        format!("walfetch {} ({})", env!("CARGO_PKG_VERSION"), env!("WALFETCH_COMMIT")),
        "the package is not of this build: run scripts/package"
    );
    let archive = Archive::new();
    let segment = "000000010000000000000002";
    archive.put(
        &format!("wal_005/{segment}.lz4"),
        &encode(Codec::Lz4, &fake_segment(segment, 1 << 20, 7)),
    );
    let checked = Command::new(&bin)
        .arg("check")
        .env_remove("WALG_S3_PREFIX")
        .env_remove("AWS_PROFILE")
        .envs(archive.env())
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    assert!(text(&checked).contains(segment), "{}", text(&checked));

    // One man page per command, besides walfetch(1).
    assert!(man_page(&root, "walfetch").contains(".TH walfetch 1"));
    for command in ["backup-fetch", "wal-fetch", "wal-verify", "status", "promote", "check-indexes"] {
        let page = man_page(&root, &format!("walfetch-{command}"));
        assert!(page.contains(&format!(".TH walfetch-{command} 1")), "walfetch-{command}.1:\n{page}");
    }

    // Completions where bash, zsh and fish look for them.
    let bash = fs::read_to_string(root.join("usr/share/bash-completion/completions/walfetch")).unwrap();
    assert!(bash.contains("wal-fetch") && bash.contains("backup-fetch"));
    let zsh = fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_walfetch")).unwrap();
    assert!(zsh.starts_with("#compdef walfetch"));
    let fish = fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/walfetch.fish")).unwrap();
    assert!(fish.contains("complete -c walfetch"));

    // The fetcher's unit runs the binary the package installed.
    let unit = fs::read_to_string(root.join("lib/systemd/system/walfetch-follow@.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let program = exec.split_whitespace().next().unwrap_or_default();
    assert_eq!(program, "/usr/bin/walfetch", "{unit}");
    assert!(root.join(program.trim_start_matches('/')).is_file());

    // The docs a user reads on the host.
    for doc in ["README.md", "MIGRATING.md", "COMPAT.md"] {
        assert!(root.join("usr/share/doc/walfetch").join(doc).is_file(), "{doc}");
    }
}
