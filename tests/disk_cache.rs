//! The on-disk extent cache: bounded, checksummed, shared across mounts and kept across remounts.
//! On S3 it is on by default; on the embedded default (objects on local disk already) the tests
//! turn it on with QUACKFS_DISK_CACHE so both backend pairs exercise it.

mod common;
use common::{duckdb, Env};
use std::path::Path;

const CAP: u64 = 8 << 20;

fn cache_files(home: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    let dir = home.join("cache/extents");
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            v.push(f.path());
        }
    }
    v
}

/// One name of each file of the cache (a file holding a run of extents has a name per extent).
fn cache_inodes(home: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    cache_files(home)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| seen.insert(m.ino())))
        .collect()
}

fn cache_bytes(home: &Path) -> u64 {
    cache_inodes(home)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn disk_cache(env: Env) {
    env.ok(&["init", "dc"]);
    let w = env.path("w");
    let m = env.mount("dc", &w, &[]);
    duckdb(
        &w.join("dc.duckdb"),
        "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(1500000); CHECKPOINT",
    );
    m.unmount();
    let want_dir = env.path("want");
    env.ok(&["export", "dc@main", want_dir.to_str().unwrap()]);
    let want = std::fs::read(want_dir.join("dc.duckdb")).unwrap();
    assert!(
        want.len() as u64 > 2 * CAP,
        "the file must be larger than the cache"
    );
    let opts = [
        "--read-only",
        "--cache-size",
        "1MiB",
        "--disk-cache",
        "8MiB",
    ];
    let envs = [("QUACKFS_DISK_CACHE", "8MiB")];
    let read_with = |tag: &str, opts: &[&str]| {
        let dir = env.path(tag);
        let m = env.mount_env(&envs, &[], "dc", &dir, opts);
        let got = std::fs::read(dir.join("dc.duckdb")).unwrap();
        m.unmount();
        got
    };
    let read = |tag: &str| read_with(tag, &opts);
    // Cold: everything from the store, the cache fills up to its bound.
    assert!(read("r1") == want, "cold read through the disk cache");
    let files = cache_files(&env.home());
    assert!(!files.is_empty(), "nothing was cached");
    assert!(
        cache_bytes(&env.home()) <= CAP,
        "the bound did not hold: {}",
        cache_bytes(&env.home())
    );
    // A remount reads the same, partly from the cache.
    assert!(read("r2") == want, "read with a warm disk cache");
    // Damage every entry (a byte in every KiB of every file, so every entry of 1 KiB or more
    // and most headers): each is detected, never served, and fetched again.
    for f in cache_inodes(&env.home()) {
        let mut raw = std::fs::read(&f).unwrap();
        let n = raw.len();
        // (The last byte too, unless the step reached it.)
        for i in (1023..n)
            .step_by(1024)
            .chain((n % 1024 != 0).then_some(n - 1))
        {
            raw[i] ^= 0x55;
        }
        std::fs::write(&f, raw).unwrap();
    }
    assert!(read("r3") == want, "a damaged cache served wrong bytes");
    assert!(cache_bytes(&env.home()) <= CAP);
    // A mount with a larger bound fills the cache beyond CAP; the next mount with CAP trims it.
    let big = [
        "--read-only",
        "--cache-size",
        "1MiB",
        "--disk-cache",
        "1GiB",
    ];
    assert!(read_with("r4", &big) == want);
    assert!(
        cache_bytes(&env.home()) > CAP,
        "the larger bound was not used: {}",
        cache_bytes(&env.home())
    );
    assert!(read("r5") == want);
    assert!(
        cache_bytes(&env.home()) <= CAP,
        "a mount did not enforce its bound on a fuller cache: {}",
        cache_bytes(&env.home())
    );
    // `merge` reads the segments its own layer replaces: it adds nothing to the disk cache.
    let before: std::collections::BTreeSet<_> = cache_files(&env.home()).into_iter().collect();
    let stdout = env.ok_env(&envs, &["merge", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["bytes_written"].as_u64().unwrap_or(0) > 0,
        "merge had nothing to read: {stdout}"
    );
    let after: std::collections::BTreeSet<_> = cache_files(&env.home()).into_iter().collect();
    assert!(
        after.is_subset(&before),
        "merge filled the disk cache: {} new entries",
        after.difference(&before).count()
    );
    // The merged head reads the same through the cache.
    assert!(read("r6") == want, "read after merge");
    // Two mounts of one data dir fill an empty cache at the same time (the same runs of extents,
    // written and linked by both processes): both read every byte right, and so does a third
    // mount from what they left.
    std::fs::remove_dir_all(env.home().join("cache/extents")).unwrap();
    let (da, db) = (env.path("c1"), env.path("c2"));
    let ma = env.mount_env(&envs, &[], "dc", &da, &opts);
    let mb = env.mount_env(&envs, &[], "dc", &db, &opts);
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| std::fs::read(da.join("dc.duckdb")).unwrap());
        let b = s.spawn(|| std::fs::read(db.join("dc.duckdb")).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    ma.unmount();
    mb.unmount();
    assert!(
        ra == want && rb == want,
        "concurrent fills served wrong bytes"
    );
    assert!(!cache_files(&env.home()).is_empty(), "nothing was cached");
    assert!(read("c3") == want, "read from a cache two mounts filled");
    assert!(cache_bytes(&env.home()) <= CAP);
}

on_both_backends!(disk_cache_embedded, disk_cache_pgs3, disk_cache);
