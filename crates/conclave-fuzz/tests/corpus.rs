//! Every committed corpus input and every saved crash input of every target goes through its
//! harness on the stable toolchain: a bug found by fuzzing once stays fixed.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

#[test]
fn every_target_has_a_committed_corpus_and_replays_it_without_a_crash() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for target in conclave_fuzz::TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "{target} has no committed seed corpus in fuzz/corpus/{target}"
        );
        let regressions = inputs(&fuzz.join("regressions").join(target));
        let harness = conclave_fuzz::harness(target).expect("the harness's fixture");
        for file in corpus.iter().chain(&regressions) {
            let input = std::fs::read(file).expect("readable");
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&input)));
            assert!(outcome.is_ok(), "{target} crashes on {}", file.display());
        }
    }
}

#[test]
fn the_seeds_made_by_the_real_code_do_not_crash_their_harnesses() {
    for target in conclave_fuzz::TARGETS {
        let harness = conclave_fuzz::harness(target).expect("the harness's fixture");
        let seeds = conclave_fuzz::seeds(target).expect("seeds");
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for seed in seeds {
            harness(&seed);
        }
    }
}
