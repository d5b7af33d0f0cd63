//! Names the commit the binary is built from, for `conclave --version`: `CONCLAVE_COMMIT` when
//! the builder sets it (the image build does), else `git rev-parse HEAD` of the checkout, else
//! `unknown` (a source archive without git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CONCLAVE_COMMIT");
    let commit = std::env::var("CONCLAVE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    // Rebuilt when HEAD moves (a commit or a checkout), not on every change of the work tree.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD"))
            && let Some(r) = head.strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={dir}/{}", r.trim());
        }
    }
    println!("cargo:rustc-env=CONCLAVE_COMMIT={commit}");
}
