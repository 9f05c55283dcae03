//! The simulator in the test suite: a fixed budget of seeds, regression
//! seeds, replay of one seed, and proof that the invariants catch a real bug.

use mf_sim::{check_seed, generate, run, SimConfig};

/// Seeds beyond the suite's budget that once failed; each must pass forever.
/// (Failures found inside the budget, seeds 0, 1, 3, 6, 82 and 218, are
/// covered by `fixed_seeds_converge_and_lose_nothing`.)
const REGRESSIONS: &[u64] = &[
    486, 719, 1066, 1362, 3977, 7820, 15708, 15823, 23538, 34051, 89823,
];

/// How many seeds the normal suite runs (about ten seconds on this machine
/// in a debug build); `SIM_SEEDS` overrides it and `SIM_START` moves the
/// first seed, for soak runs of any length.
const SUITE_SEEDS: u64 = 300;

fn seeds_from_env(default: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fixed_seeds_converge_and_lose_nothing() {
    let n = seeds_from_env(SUITE_SEEDS);
    let start: u64 = std::env::var("SIM_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let mut effects = 0;
    for seed in start..start + n {
        match check_seed(&SimConfig::for_seed(seed)) {
            Ok(o) => effects += o.effects,
            Err(report) => panic!("{report}"),
        }
        if (seed - start + 1).is_multiple_of(10_000) {
            eprintln!("{} seeds passed (up to seed {seed})", seed - start + 1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} seeds, {effects} effects in {secs:.1} s ({:.1} runs/s)",
        n as f64 / secs
    );
}

#[test]
fn regression_seeds() {
    for &seed in REGRESSIONS {
        // As they ran when they failed: before the simulator had a liar.
        let cfg = SimConfig {
            liars: false,
            unclaimed: false,
            ..SimConfig::for_seed(seed)
        };
        if let Err(report) = check_seed(&cfg) {
            panic!("{report}");
        }
    }
}

/// `SEED=… cargo test -p mf-sim --test sim replay -- --nocapture` replays
/// one seed exactly and prints its outcome.
#[test]
fn replay() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match check_seed(&SimConfig::for_seed(seed)) {
        Ok(o) => println!(
            "seed {seed}: ok, {} effects, {} virtual ms, {} conflict copies",
            o.effects, o.virtual_ms, o.conflict_copies
        ),
        Err(report) => panic!("{report}"),
    }
}

/// With the last-moment check before a replace removed (the planted bug),
/// the invariants must catch the lost local edit within the seed budget.
#[test]
fn planted_bug_is_caught() {
    let found = (0..200).find(|&seed| {
        let cfg = SimConfig {
            plant_skip_last_moment_check: true,
            ..SimConfig::for_seed(seed)
        };
        run(&cfg, &generate(&cfg)).is_err()
    });
    assert!(
        found.is_some(),
        "the planted bug went unnoticed in 200 seeds"
    );
    println!("planted bug caught by seed {}", found.unwrap());
}

#[test]
fn runs_are_deterministic() {
    let cfg = SimConfig::for_seed(7);
    let a = run(&cfg, &generate(&cfg))
        .map(|o| (o.effects, o.virtual_ms))
        .map_err(|f| f.violation);
    let b = run(&cfg, &generate(&cfg))
        .map(|o| (o.effects, o.virtual_ms))
        .map_err(|f| f.violation);
    assert_eq!(a, b);
}
