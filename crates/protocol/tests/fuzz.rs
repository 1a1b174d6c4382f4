//! A bounded fuzz run that CI can afford, on stable: the fuzz targets' bodies
//! (`switchyard_protocol::fuzzing`) over the seed corpus in `fuzz/corpus/`, then over
//! deterministic mutations of it. `SWITCHYARD_FUZZ_ITERATIONS` sets the number of mutated
//! inputs per target (default 200,000). The coverage-guided run is `cargo +nightly fuzz run`
//! (see docs/security.md).

use std::path::PathBuf;

const DEFAULT_ITERATIONS: usize = 200_000;

/// Bytes that matter to the decoders: JSON punctuation and MessagePack headers.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"\\u0000",
    b"1e999",
    b"-0",
    b"null",
    b"\"type\"",
    b"\"roomId\"",
    b"\"ref\"",
    b"\xff",
    b"\xc1",
    b"\x91",
    b"\x81",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x01",
    b"\xc4\x02ab",
    b"\xd9\x05hello",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(8)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                data.splice(at..at, other[from..].iter().copied());
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                let chunk: Vec<u8> = data[i..(i + 16).min(data.len())].to_vec();
                for _ in 0..rng.below(64) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    data.truncate(70_000);
    data
}

fn run(target: &str, body: fn(&[u8])) {
    let iterations = std::env::var("SWITCHYARD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seeds = seeds(target);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    let mut executions = 0;
    for input in seeds
        .iter()
        .cloned()
        .chain((0..iterations).map(|_| mutate(&mut rng, &seeds)))
    {
        let outcome = std::panic::catch_unwind(|| body(&input));
        assert!(
            outcome.is_ok(),
            "{target}: an input broke an invariant; add it to fuzz/corpus/{target}: {:02x?}",
            input
        );
        executions += 1;
    }
    eprintln!("fuzz {target}: {executions} executions, no failure");
}

#[test]
fn frame_target_bounded_run() {
    run("frame", switchyard_protocol::fuzzing::frame);
}

#[test]
fn message_target_bounded_run() {
    run("message", switchyard_protocol::fuzzing::message);
}
