//! `conclave-fuzz`: mutation fuzzing of every parser that takes untrusted bytes, on stable Rust.
//!
//! Each target starts from real seeds (the AMD Milan vector, a simulated report, tokens and
//! requests made by the real services) and feeds mutated inputs (bit flips, interesting bytes,
//! insertions, deletions, duplications, splices, JSON tokens) to the real parser. A panic is a
//! crash: the input is saved under `--crashes` and counted. The fuzzer is not coverage-guided
//! (that needs a nightly compiler here); it relies on structure-aware seeds and mutations.
//!
//!   conclave-fuzz [--seconds S] [--crashes DIR] [target ...]

#![forbid(unsafe_code)]

mod targets;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The code under test: must not panic on any input.
pub type Harness = Box<dyn FnMut(&[u8])>;

/// A fuzz target: its seeds and its harness.
pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub run: Harness,
}

/// xorshift64*: fast, and the fuzzer needs no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'.', b'='];
const TOKENS: [&[u8]; 14] = [
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"18446744073709551616",
    b"\"\"",
    b"{}",
    b"[]",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\\u0000",
    b"\"\\ud800\"",
    b"-----BEGIN CERTIFICATE-----\n",
    b"eyJhbGciOiJub25lIn0",
    b"\xff\xff\xff\xff",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    for _ in 0..1 + rng.below(6) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let at = rng.below(len + 1);
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
            }
            7 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, t.iter().copied());
            }
            _ => {
                let at = rng.below(len + 1);
                out.truncate(at);
            }
        }
    }
}

struct Outcome {
    execs: u64,
    crashes: u64,
    elapsed: Duration,
}

fn fuzz(target: &mut Target, seconds: f64, crashes_dir: &std::path::Path, seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let (mut execs, mut crashes) = (0u64, 0u64);
    let mut input = Vec::new();
    // The seeds themselves first: they must pass.
    let seeds = target.seeds.clone();
    for s in &seeds {
        if std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(s))).is_err() {
            crashes += 1;
            save(crashes_dir, target.name, s);
        }
        execs += 1;
    }
    'outer: loop {
        for _ in 0..256 {
            mutate(&mut rng, &seeds, &mut input);
            if std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))).is_err() {
                crashes += 1;
                save(crashes_dir, target.name, &input);
            }
            execs += 1;
        }
        if started.elapsed() >= budget {
            break 'outer;
        }
    }
    Outcome {
        execs,
        crashes,
        elapsed: started.elapsed(),
    }
}

fn save(dir: &std::path::Path, target: &str, input: &[u8]) {
    let dir = dir.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let name =
        hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input).as_ref()[..12]);
    let _ = std::fs::write(dir.join(name), input);
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let mut seconds = 10.0;
    let mut crashes_dir = PathBuf::from("target/fuzz-crashes");
    let mut wanted = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--crashes" => crashes_dir = args.next().unwrap_or_default().into(),
            "--list" => {
                for t in targets::NAMES {
                    println!("{t}");
                }
                return Ok(std::process::ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                println!("conclave-fuzz [--seconds S] [--crashes DIR] [--list] [target ...]");
                return Ok(std::process::ExitCode::SUCCESS);
            }
            t => wanted.push(t.to_string()),
        }
    }
    for w in &wanted {
        if !targets::NAMES.contains(&w.as_str()) {
            anyhow::bail!("unknown target {w:?}; --list shows them");
        }
    }
    // Panics are what we look for: count them, do not print a backtrace for each.
    std::panic::set_hook(Box::new(|_| {}));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    println!(
        "{:<16} {:>14} {:>12} {:>8} {:>8}",
        "target", "executions", "exec/s", "crashes", "seconds"
    );
    let mut total_crashes = 0;
    for name in targets::NAMES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let mut target = targets::make(name)?;
        let o = fuzz(&mut target, seconds, &crashes_dir, seed);
        total_crashes += o.crashes;
        println!(
            "{:<16} {:>14} {:>12.0} {:>8} {:>8.1}",
            name,
            o.execs,
            o.execs as f64 / o.elapsed.as_secs_f64(),
            o.crashes,
            o.elapsed.as_secs_f64()
        );
    }
    if total_crashes > 0 {
        println!("crashing inputs saved under {}", crashes_dir.display());
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_inputs_and_panics_are_caught_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = Target {
            name: "panics-on-0xff",
            seeds: vec![b"{\"a\": [1, 2, 3]}".to_vec()],
            run: Box::new(|input| assert!(!input.contains(&0xff), "found 0xff")),
        };
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let o = fuzz(&mut target, 0.2, dir.path(), 42);
        std::panic::set_hook(hook);
        assert!(o.execs > 256);
        assert!(o.crashes > 0, "a planted panic must be found");
        let saved = std::fs::read_dir(dir.path().join("panics-on-0xff")).unwrap();
        for f in saved {
            assert!(std::fs::read(f.unwrap().path()).unwrap().contains(&0xff));
        }
    }

    #[test]
    fn every_target_builds_and_accepts_its_seeds() {
        for name in targets::NAMES {
            let mut t = targets::make(name).unwrap();
            assert!(!t.seeds.is_empty(), "{name}");
            for s in t.seeds.clone() {
                (t.run)(&s);
            }
        }
    }
}
