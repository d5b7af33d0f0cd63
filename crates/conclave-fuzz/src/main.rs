//! `conclave-fuzz`: the fuzz targets' seeds and replays, on the stable toolchain (the fuzzing
//! itself is `cargo fuzz`, driven by `scripts/fuzz`).
//!
//!   conclave-fuzz seeds DIR             write every target's seeds to DIR/<target>/
//!   conclave-fuzz replay TARGET FILE…   run TARGET's harness on each file (a crash reproduces)
//!   conclave-fuzz targets               list the targets

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seeds") => {
            let dir = PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!("seeds DIR"))?);
            for target in conclave_fuzz::TARGETS {
                let out = dir.join(target);
                std::fs::create_dir_all(&out)?;
                let seeds = conclave_fuzz::seeds(target)?;
                for (i, seed) in seeds.iter().enumerate() {
                    std::fs::write(out.join(format!("seed-{i}")), seed)?;
                }
                println!("{target}: {} seeds in {}", seeds.len(), out.display());
            }
        }
        Some("replay") => {
            let target = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("replay TARGET FILE…"))?;
            let harness = conclave_fuzz::harness(target)?;
            for file in &args[2..] {
                let input = std::fs::read(file)?;
                harness(&input);
                println!("{file}: no crash");
            }
        }
        Some("targets") => {
            for target in conclave_fuzz::TARGETS {
                println!("{target}");
            }
        }
        _ => anyhow::bail!(
            "usage: conclave-fuzz seeds DIR | replay TARGET FILE… | targets (fuzzing itself: scripts/fuzz)"
        ),
    }
    Ok(())
}
