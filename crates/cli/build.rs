//! Puts the git revision the binary is built from into `keygate --version`
//! (`KEYGATE_GIT_REVISION`): `git rev-parse --short HEAD`, or `KEYGATE_GIT_REVISION` from the
//! build's environment (a packager building from a tarball), or "unknown revision" without git.
//! Rebuilt when HEAD moves: a commit, a checkout, a new branch tip.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEYGATE_GIT_REVISION");
    let revision = std::env::var("KEYGATE_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown revision".into());
    println!("cargo:rustc-env=KEYGATE_GIT_REVISION={revision}");

    // HEAD names the branch (or a detached commit); the branch's ref file, or packed-refs when
    // it has none, holds the commit. Only files that exist are watched: cargo reruns a build
    // script on every build for a missing one.
    let mut watched = vec!["HEAD".to_owned()];
    match git(&["symbolic-ref", "-q", "HEAD"]) {
        Some(branch) => watched.extend([branch, "packed-refs".to_owned()]),
        None => watched.push("packed-refs".to_owned()),
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).map(PathBuf::from)
            && let Ok(path) = std::path::absolute(&path)
            && path.exists()
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
