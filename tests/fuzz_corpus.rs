//! Replays the checked-in fuzz corpus (fuzz/corpus/<target>/*) through the same entry
//! points the fuzz targets use, so CI catches a regression on any input the fuzzers
//! ever kept, without a fuzzer.

use std::fs;
use std::path::PathBuf;

/// A fuzz target's name and entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_corpus_input_is_handled_without_panicking() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: [Target; 8] = [
        ("names_and_history", walfetch::fuzzing::names_and_history),
        ("sentinel_json", walfetch::fuzzing::sentinel_json),
        ("containers", walfetch::fuzzing::containers),
        ("tar_paths", walfetch::fuzzing::tar_paths),
        ("wal_records", walfetch::fuzzing::wal_records),
        ("configuration", walfetch::fuzzing::configuration),
        ("decryption", walfetch::fuzzing::decryption),
        ("wi1", walfetch::fuzzing::wi1),
    ];
    let mut replayed = 0;
    for (name, run) in targets {
        let dir = root.join(name);
        let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name}: empty corpus");
        for input in inputs {
            run(&fs::read(&input).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 10);
}
