//! Operator mistakes and bad input never lose data or show wrong bytes (issue 10), and every kind
//! of failure has its documented exit code (issue 9, item 4). Each test runs the real binary.

mod common;
use common::{is_mounted, store_url, with_store, Env, TmpfsGuard};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Keys of the layer objects in the store of `env`.
fn layer_keys(env: &Env) -> Vec<String> {
    with_store(env, async |st| {
        st.list("layers/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    })
}

fn is_pg(env: &Env) -> bool {
    !env.backend.is_empty()
}

/// Runs one SQL statement on the catalog of `env` (sqlite3 or psql).
fn sql(env: &Env, stmt: &str) -> String {
    let out = if is_pg(env) {
        let url = &env.backend[0].1;
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                url,
                "-c",
                stmt,
            ])
            .output()
            .unwrap()
    } else {
        Command::new("sqlite3")
            .arg(env.home().join("catalog.sqlite"))
            .arg(stmt)
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "{stmt}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh, empty PostgreSQL database on the test server (a mistyped catalog).
fn fresh_pg_catalog() -> String {
    let pg = std::env::var("QUACKFS_TEST_PG_URL").unwrap();
    let name = format!("qfs_{}", common::uuid_like());
    let out = Command::new("psql")
        .arg(&pg)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (base, _) = pg.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `db` with two commits of f.bin (10 kB, then 20 kB); returns their ids.
fn two_commits(env: &Env) -> (String, String) {
    std::fs::write(env.path("f.bin"), random_bytes(10_000, 1)).unwrap();
    env.ok(&["init", "db", "--import", "f.bin", "-m", "first"]);
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let c1 = log[0]["id"].as_str().unwrap().to_string();
    std::fs::write(env.path("f.bin"), random_bytes(20_000, 2)).unwrap();
    let c2 = env
        .ok(&["import", "f.bin", "-m", "second"])
        .trim()
        .to_string();
    (c1, c2)
}

// ------------------------------------------------------------------------------------------------
// 10.1: a catalog and its store are bound to each other.

fn catalog_and_store_are_bound_to_each_other(env: Env) {
    two_commits(&env);
    let objects = layer_keys(&env);
    assert_eq!(objects.len(), 2);
    let typo = if is_pg(&env) {
        fresh_pg_catalog()
    } else {
        format!("sqlite://{}", env.path("typo.sqlite").display())
    };
    // Destructive and read commands alike refuse a catalog that does not exist.
    for args in [
        &["gc", "--retain", "0s", "--grace", "0s"][..],
        &["repos"],
        &["import", "f.bin"],
    ] {
        let e = env.fails_with(9, &[&["--catalog", &typo][..], args].concat());
        assert!(
            e.contains("does not exist") && e.contains("hint: only `quackfs init NAME` creates"),
            "{e}"
        );
    }
    assert!(!env.path("typo.sqlite").exists(), "nothing was created");
    // `init` on it: the store belongs to the real catalog.
    let e = env.fails_with(9, &["--catalog", &typo, "init", "other"]);
    assert!(e.contains("belongs to another catalog"), "{e}");
    assert!(
        !env.path("typo.sqlite").exists(),
        "a refused init leaves no catalog"
    );
    let e = env.fails_with(
        9,
        &["--catalog", &typo, "gc", "--retain", "0s", "--grace", "0s"],
    );
    assert!(e.contains("does not exist"), "{e}");
    // An empty catalog file is not a catalog either (and stays empty).
    if !is_pg(&env) {
        std::fs::write(env.path("empty.sqlite"), b"").unwrap();
        let empty = format!("sqlite://{}", env.path("empty.sqlite").display());
        let e = env.fails_with(9, &["--catalog", &empty, "repos"]);
        assert!(e.contains("the file is empty"), "{e}");
        assert_eq!(
            std::fs::metadata(env.path("empty.sqlite")).unwrap().len(),
            0
        );
    }
    // A second catalog with a store of its own works, and cannot be pointed at the first store.
    let second_store = if is_pg(&env) {
        format!("{}-second", store_url(&env))
    } else {
        format!("file://{}", env.path("objects2").display())
    };
    let second = if is_pg(&env) {
        fresh_pg_catalog()
    } else {
        format!("sqlite://{}", env.path("second.sqlite").display())
    };
    env.ok(&[
        "--catalog",
        &second,
        "--store",
        &second_store,
        "init",
        "two",
    ]);
    env.ok(&["use", "db"]);
    let e = env.fails_with(
        9,
        &[
            "--catalog",
            &second,
            "gc",
            "--retain",
            "0s",
            "--grace",
            "0s",
        ],
    );
    assert!(e.contains("belongs to another catalog"), "{e}");
    let e = env.fails_with(9, &["--store", &second_store, "import", "f.bin"]);
    assert!(e.contains("belongs to another catalog"), "{e}");
    // Nothing of the real store was touched.
    assert_eq!(layer_keys(&env), objects);
    env.ok(&["gc", "--retain", "0s", "--grace", "0s"]);
    let ok = env.ok(&["verify", "--all"]);
    assert!(ok.starts_with("ok:"), "{ok}");
    env.ok(&["export", "main", s(&env.path("out"))]);
    assert_eq!(
        std::fs::read(env.path("out/f.bin")).unwrap(),
        random_bytes(20_000, 2)
    );
}

on_both_backends!(
    catalog_and_store_are_bound_to_each_other_embedded,
    catalog_and_store_are_bound_to_each_other_pg_s3,
    catalog_and_store_are_bound_to_each_other
);

fn an_earlier_versions_catalog_adopts_its_store_and_gc_keeps_unproven_objects(env: Env) {
    two_commits(&env);
    // What an earlier version left: no binding in the catalog, no marker in the store, and an
    // object no catalog row names (whose, nobody can tell).
    sql(&env, "DELETE FROM catalog_meta");
    let foreign = "layers/0123456789abcdef0123456789abcdef";
    with_store(&env, async |st| {
        st.delete("quackfs-store.json").await.unwrap();
        st.put(foreign, bytes::Bytes::from_static(b"someone's object"))
            .await
            .unwrap();
    });
    // Reading does not bind.
    env.ok(&["log"]);
    assert_eq!(sql(&env, "SELECT COUNT(*) FROM catalog_meta"), "0");
    std::thread::sleep(Duration::from_millis(1100));
    // The first writer binds (adopts the store): the unproven object stays.
    let gc: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--retain", "7d", "--grace", "0s"]))
            .unwrap();
    assert_eq!(gc["orphans_deleted"], 0, "{gc}");
    assert_eq!(gc["unproven_objects"], 1, "{gc}");
    assert!(layer_keys(&env).iter().any(|k| k == foreign));
    let marker = with_store(&env, async |st| st.get("quackfs-store.json").await.unwrap());
    let marker: serde_json::Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker["adopted"], true, "{marker}");
    assert_eq!(
        sql(
            &env,
            "SELECT value FROM catalog_meta WHERE key = 'catalog_id'"
        ),
        marker["catalog_id"].as_str().unwrap()
    );
    // An upload that failed after the binding is provably this catalog's: gc removes it.
    std::thread::sleep(Duration::from_millis(1100));
    let own = "layers/fedcba9876543210fedcba9876543210";
    with_store(&env, async |st| {
        st.put(own, bytes::Bytes::from_static(b"half a commit"))
            .await
            .unwrap();
    });
    let gc: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--grace", "0s"])).unwrap();
    assert_eq!(gc["orphans_deleted"], 1, "{gc}");
    let keys = layer_keys(&env);
    assert!(!keys.iter().any(|k| k == own));
    assert!(keys.iter().any(|k| k == foreign), "never deleted");
    assert!(env.ok(&["verify", "--all"]).starts_with("ok:"));
}

on_both_backends!(
    an_earlier_versions_catalog_adopts_its_store_and_gc_keeps_unproven_objects_embedded,
    an_earlier_versions_catalog_adopts_its_store_and_gc_keeps_unproven_objects_pg_s3,
    an_earlier_versions_catalog_adopts_its_store_and_gc_keeps_unproven_objects
);

// ------------------------------------------------------------------------------------------------
// 10.2: nothing is built on an expired commit; verify checks that claimed bytes are backed.

fn branch_tag_reset_clone_refuse_an_expired_commit(env: Env) {
    let (c1, _) = two_commits(&env);
    env.ok(&["gc", "--retain", "0s", "--grace", "0s"]);
    for args in [
        &["branch", "old", "main~1"][..],
        &["branch", "old2", &c1[..12]],
        &["tag", "t1", "main~1"],
        &["reset", "main", "main~1"],
        &["clone", "db@main~1", "copy"],
    ] {
        let e = env.fails_with(7, args);
        assert!(e.contains("expired"), "{args:?}: {e}");
    }
    let branches = env.ok(&["branch", "--json"]);
    assert!(!branches.contains("\"old"), "{branches}");
    env.fails_with(6, &["-r", "copy", "log"]);
    assert!(env.ok(&["verify", "--all"]).starts_with("ok:"));
}

on_both_backends!(
    branch_tag_reset_clone_refuse_an_expired_commit_embedded,
    branch_tag_reset_clone_refuse_an_expired_commit_pg_s3,
    branch_tag_reset_clone_refuse_an_expired_commit
);

fn verify_fails_when_a_size_claims_bytes_no_layer_holds(env: Env) {
    two_commits(&env);
    assert!(env.ok(&["verify"]).starts_with("ok:"));
    sql(
        &env,
        "UPDATE commit_files SET size = 30000 WHERE size = 20000",
    );
    let out = env.cmd().args(["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("f.bin claims 30000 bytes, but its layers hold only 20000"),
        "{}",
        text(&out)
    );
}

on_both_backends!(
    verify_fails_when_a_size_claims_bytes_no_layer_holds_embedded,
    verify_fails_when_a_size_claims_bytes_no_layer_holds_pg_s3,
    verify_fails_when_a_size_claims_bytes_no_layer_holds
);

// ------------------------------------------------------------------------------------------------
// 10.3: `quackfs umount` only unmounts quackfs mounts.

#[test]
fn umount_refuses_filesystems_that_are_not_quackfs() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let t = env.path("t");
    std::fs::create_dir_all(&t).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&t)
        .status()
        .unwrap();
    assert!(st.success(), "this test mounts a tmpfs and needs root");
    let _guard = TmpfsGuard(t.clone());
    std::fs::write(t.join("precious"), b"keep me").unwrap();
    for arg in ["t", "t/", "./t/../t"] {
        let e = env.fails_with(1, &["umount", arg]);
        assert!(
            e.contains("is not a quackfs mount (its filesystem is tmpfs"),
            "{e}"
        );
    }
    assert!(is_mounted(&std::fs::canonicalize(&t).unwrap()));
    assert_eq!(std::fs::read(t.join("precious")).unwrap(), b"keep me");
    let e = env.fails_with(1, &["umount", "/"]);
    assert!(e.contains("/ is not a quackfs mount"), "{e}");
    let e = env.fails_with(1, &["umount", s(&env.work())]);
    assert!(e.contains("is not a mount point"), "{e}");
}

#[test]
fn umount_accepts_a_trailing_slash_dot_dot_and_a_symlink() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let m = env.path("m");
    std::os::unix::fs::symlink("m", env.path("link")).unwrap();
    for arg in ["m/", "./m/../m", "link", "link/"] {
        let mount = env.mount("db", &m, &[]);
        let dir = mount.dir.clone();
        env.ok(&["umount", arg]);
        assert!(!is_mounted(&dir), "{arg}: still mounted");
        drop(mount);
    }
}

// ------------------------------------------------------------------------------------------------
// 10.6: names that shadow.

fn names_that_look_like_commit_ids_are_refused_or_warned(env: Env) {
    let (c1, c2) = two_commits(&env);
    for args in [
        &["branch", &c1[..8]][..],
        &["branch", &c2],
        &["tag", &c1[..4].to_ascii_uppercase()],
    ] {
        let e = env.fails_with(3, args);
        assert!(e.contains("would hide commit"), "{args:?}: {e}");
    }
    // A hex name no commit starts with is accepted, with a warning.
    let name = ["cafe", "beef", "dead", "f00d"]
        .into_iter()
        .find(|p| !c1.starts_with(p) && !c2.starts_with(p))
        .unwrap();
    let out = env.cmd().args(["branch", name, "main~1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("looks like a commit id"),
        "{}",
        text(&out)
    );
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", name, "--json"])).unwrap();
    assert_eq!(log[0]["id"], c1.as_str(), "the branch");
    // The commit ids still mean the commits.
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", &c2[..8], "--json"])).unwrap();
    assert_eq!(log[0]["id"], c2.as_str());
}

on_both_backends!(
    names_that_look_like_commit_ids_are_refused_or_warned_embedded,
    names_that_look_like_commit_ids_are_refused_or_warned_pg_s3,
    names_that_look_like_commit_ids_are_refused_or_warned
);

fn a_deleted_current_branch_never_falls_through_to_another_database(env: Env) {
    // A database that happens to be called `main`, with history of its own.
    std::fs::write(env.path("m.bin"), b"the other database").unwrap();
    env.ok(&["init", "main", "--import", "m.bin", "-m", "other history"]);
    env.ok(&["init", "shop"]);
    env.ok(&["branch", "keep"]);
    env.ok(&["branch", "-d", "main"]);
    let e = env.fails_with(6, &["log"]);
    assert!(
        e.contains("current branch \"main\" does not exist in database \"shop\""),
        "{e}"
    );
    assert!(e.contains("hint: `quackfs use shop@BRANCH`"), "{e}");
    assert!(!e.contains("other history"), "{e}");
    env.fails_with(6, &["show"]);
    env.fails_with(6, &["verify"]);
    // Named explicitly, the other database is meant, and the output says so.
    let out = env.cmd().args(["log", "main"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "note: \"main\" is not a revision of database \"shop\"; using database \"main\""
        ),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("other history"));
}

on_both_backends!(
    a_deleted_current_branch_never_falls_through_to_another_database_embedded,
    a_deleted_current_branch_never_falls_through_to_another_database_pg_s3,
    a_deleted_current_branch_never_falls_through_to_another_database
);

// ------------------------------------------------------------------------------------------------
// 10.8: no leftovers after Ctrl-C, and the next command sweeps those of killed ones.

fn tmp_files(dir: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.contains(part))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until a file whose name contains `part` appears in `dir`.
fn wait_for_file(dir: &Path, part: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tmp_files(dir, part).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the command ended before writing {part}"
        );
        assert!(Instant::now() < deadline, "no {part} file after 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// A 20 GiB sparse file: reading it takes a while, storing it takes nothing.
fn sparse_file(env: &Env) -> PathBuf {
    let p = env.path("big.bin");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(20 << 30).unwrap();
    p
}

fn ctrl_c_during_import_removes_its_temporary_layer(env: Env) {
    env.ok(&["init", "db"]);
    let big = sparse_file(&env);
    let tmp = env.home().join("tmp");
    let mut child = env
        .std_cmd()
        .arg("import")
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&tmp, "layer-", &mut child);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("error: interrupted by SIGINT"),
        "{}",
        text(&out)
    );
    assert_eq!(tmp_files(&tmp, "layer-"), Vec::<String>::new());
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1, "nothing committed");

    // Killed outright, it cannot clean up: the next command does, once the process is gone.
    let mut child = env
        .std_cmd()
        .arg("import")
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&tmp, "layer-", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(tmp_files(&tmp, "layer-").len(), 1);
    env.ok(&["log"]);
    assert_eq!(tmp_files(&tmp, "layer-"), Vec::<String>::new());
}

on_both_backends!(
    ctrl_c_during_import_removes_its_temporary_layer_embedded,
    ctrl_c_during_import_removes_its_temporary_layer_pg_s3,
    ctrl_c_during_import_removes_its_temporary_layer
);

fn ctrl_c_during_export_removes_its_temporary_file(env: Env) {
    std::fs::write(env.path("a.bin"), random_bytes(96 << 20, 3)).unwrap();
    std::fs::write(env.path("b.bin"), random_bytes(96 << 20, 4)).unwrap();
    env.ok(&["init", "db", "--import", "a.bin", "b.bin"]);
    std::fs::remove_file(env.path("a.bin")).unwrap();
    std::fs::remove_file(env.path("b.bin")).unwrap();
    // Freeze the export as soon as its first temporary file appears, so Ctrl-C lands mid-way.
    let mut interrupted = false;
    for attempt in 0..10 {
        let out_dir = env.path(&format!("out{attempt}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let mut child = env
            .std_cmd()
            .arg("export")
            .arg("main")
            .arg(&out_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while tmp_files(&out_dir, ".quackfs-export-").is_empty()
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        signal(&child, libc::SIGSTOP);
        signal(&child, libc::SIGINT);
        signal(&child, libc::SIGCONT);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            tmp_files(&out_dir, ".quackfs-export-"),
            Vec::<String>::new(),
            "{}",
            text(&out)
        );
        if out.status.code() == Some(130) {
            assert!(
                text(&out).contains("interrupted by SIGINT"),
                "{}",
                text(&out)
            );
            interrupted = true;
            break;
        }
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        interrupted,
        "no export was interrupted mid-way in 10 attempts"
    );
}

on_both_backends!(
    ctrl_c_during_export_removes_its_temporary_file_embedded,
    ctrl_c_during_export_removes_its_temporary_file_pg_s3,
    ctrl_c_during_export_removes_its_temporary_file
);

#[test]
fn leftovers_of_killed_exports_are_swept_but_never_those_of_running_ones() {
    let env = Env::new();
    std::fs::write(env.path("f.bin"), b"contents").unwrap();
    env.ok(&["init", "db", "--import", "f.bin"]);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let id = "0123456789abcdef0123456789abcdef";
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let dead_export = out.join(format!(".f.bin.quackfs-export-{dead}-{id}"));
    let live_export = out.join(format!(".f.bin.quackfs-export-{live}-{id}"));
    let tmp = env.home().join("tmp");
    let dead_layer = tmp.join(format!("import-{dead}-{id}.tmp"));
    let live_layer = tmp.join(format!("import-{live}-{id}.tmp"));
    let unrelated = out.join("notes.txt");
    for p in [
        &dead_export,
        &live_export,
        &dead_layer,
        &live_layer,
        &unrelated,
    ] {
        std::fs::write(p, b"x").unwrap();
    }
    env.ok(&["export", "main", s(&out), "--force"]);
    assert!(!dead_export.exists() && !dead_layer.exists());
    assert!(live_export.exists() && live_layer.exists() && unrelated.exists());
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), b"contents");
}

// ------------------------------------------------------------------------------------------------
// 10.9: smaller contract breaks.

#[test]
fn log_to_a_full_disk_is_an_error_not_a_panic() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    for args in [&["log"][..], &["log", "--json"], &["show"], &["status"]] {
        let out = env
            .std_cmd()
            .args(args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: cannot write the output"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn log_n_0_prints_no_commit() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    assert_eq!(env.ok(&["log", "-n", "0"]), "");
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "-n", "0", "--json"])).unwrap();
    assert_eq!(log, serde_json::json!([]));
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "-n", "1", "--json"])).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
}

#[test]
fn importing_a_proc_file_is_an_input_error() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let e = env.fails_with(1, &["import", "/proc/cpuinfo"]);
    assert!(
        e.contains("/proc/cpuinfo: it holds more than the 0 bytes its size says"),
        "{e}"
    );
    assert!(!e.contains("verify"), "{e}");
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
}

fn commands_inside_a_mount_act_on_its_database(env: Env) {
    env.ok(&["init", "shop"]);
    env.ok(&["init", "other"]);
    let m = env.path("m");
    let mount = env.mount("shop", &m, &["--autocommit", "off"]);
    let inside = |args: &[&str]| {
        let out = env
            .cmd()
            .current_dir(&mount.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    inside(&["commit", "--allow-empty", "-m", "made inside"]);
    let st = inside(&["status"]);
    assert!(st.contains("database shop  branch main"), "{st}");
    assert!(env.ok(&["-r", "shop", "log"]).contains("made inside"));
    assert!(!env.ok(&["-r", "other", "log"]).contains("made inside"));
    // -r still wins.
    inside(&["-r", "other", "commit", "--allow-empty", "-m", "named"]);
    assert!(env.ok(&["-r", "other", "log"]).contains("named"));
    mount.unmount();
}

on_both_backends!(
    commands_inside_a_mount_act_on_its_database_embedded,
    commands_inside_a_mount_act_on_its_database_pg_s3,
    commands_inside_a_mount_act_on_its_database
);

#[test]
fn mount_refuses_a_garbage_cache_size() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let m = env.path("m");
    std::fs::create_dir_all(&m).unwrap();
    let out = env
        .cmd()
        .args(["mount", "db", s(&m), "--cache-size", "garbage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid value 'garbage' for '--cache-size <SIZE>'"));
    assert!(!is_mounted(&m));
}

fn status_lists_read_only_mounts_and_survives_a_missing_object(env: Env) {
    two_commits(&env);
    env.ok(&["tag", "v1", "main~1"]);
    let ro = env.path("ro");
    let mount = env.mount("db@v1", &ro, &[]);
    let st = env.ok(&["status"]);
    assert!(st.contains("read-only by host="), "{st}");
    assert!(st.contains(&format!("dir={}", mount.dir.display())), "{st}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["mounts"][0]["writable"], false, "{json}");
    mount.unmount();
    // The head's newest object goes missing: status still reports everything else.
    let show: serde_json::Value = serde_json::from_str(&env.ok(&["show", "--json"])).unwrap();
    let key = show["layers"][0]["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    with_store(&env, async |st| st.delete(&key).await.unwrap());
    // (As seen from a host that did not cache its footer: S3 commands keep a disk cache.)
    let _ = std::fs::remove_dir_all(env.home().join("cache"));
    let st = env.ok(&["status"]);
    assert!(st.contains("its layers cannot be read"), "{st}");
    assert!(st.contains("pending  nothing"), "{st}");
    assert!(st.contains("catalog  "), "{st}");
}

on_both_backends!(
    status_lists_read_only_mounts_and_survives_a_missing_object_embedded,
    status_lists_read_only_mounts_and_survives_a_missing_object_pg_s3,
    status_lists_read_only_mounts_and_survives_a_missing_object
);

#[test]
fn a_file_store_url_without_an_absolute_path_is_refused() {
    let env = Env::new();
    for url in ["file://", "file://objects", "file://./x"] {
        let e = env.fails_with(9, &["--store", url, "init", "db"]);
        assert!(e.contains("file:// needs an absolute path"), "{e}");
    }
    let left: Vec<_> = std::fs::read_dir(env.work()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "nothing written in the current directory: {left:?}"
    );
}

fn merge_dry_run_announces_what_merge_writes(env: Env) {
    // Two imports, then one commit of three synced segments: 5 layers, 3 once merged.
    two_commits(&env);
    let m = env.path("m");
    let mount = env.mount("db", &m, &["--autocommit", "off"]);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(mount.dir.join("x.bin"))
            .unwrap();
        for i in 0..3u64 {
            f.seek(SeekFrom::Start(i * 8192)).unwrap();
            f.write_all(&random_bytes(4096, i as u32 + 7)).unwrap();
            f.sync_all().unwrap();
        }
    }
    mount.unmount();
    env.ok(&["commit", "-m", "segments"]);
    let dry: serde_json::Value =
        serde_json::from_str(&env.ok(&["merge", "--dry-run", "--json"])).unwrap();
    let real: serde_json::Value = serde_json::from_str(&env.ok(&["merge", "--json"])).unwrap();
    assert!(
        !dry["merged_segments"].as_array().unwrap().is_empty(),
        "{dry}"
    );
    assert_eq!(
        dry["merged_segments"], real["merged_segments"],
        "{dry} {real}"
    );
    assert_eq!(dry["images"], real["images"], "{dry} {real}");
    assert_eq!(real["images"], serde_json::json!([]), "{real}");
    assert!(env.ok(&["verify", "--all"]).starts_with("ok:"));
}

on_both_backends!(
    merge_dry_run_announces_what_merge_writes_embedded,
    merge_dry_run_announces_what_merge_writes_pg_s3,
    merge_dry_run_announces_what_merge_writes
);

fn verify_all_lists_every_damaged_object(env: Env) {
    two_commits(&env);
    let keys = layer_keys(&env);
    assert_eq!(keys.len(), 2);
    with_store(&env, async |st| {
        for k in &keys {
            st.delete(k).await.unwrap();
        }
    });
    let out = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for k in &keys {
        assert!(
            stdout.contains(&format!("damaged  {k}: missing from the store")),
            "{}",
            text(&out)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: verify found 2 problem(s)"),
        "{stderr}"
    );
    let json = env
        .cmd()
        .args(["verify", "--all", "--json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(5));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["damaged"].as_array().unwrap().len(), 2, "{report}");
}

on_both_backends!(
    verify_all_lists_every_damaged_object_embedded,
    verify_all_lists_every_damaged_object_pg_s3,
    verify_all_lists_every_damaged_object
);

#[test]
fn subcommand_help_puts_global_options_under_their_own_heading() {
    let env = Env::new();
    let help = env.ok(&["log", "--help"]);
    let (own, global) = help
        .split_once("Global options:")
        .unwrap_or_else(|| panic!("{help}"));
    assert!(
        own.contains("--max-count") && !own.contains("--catalog"),
        "{help}"
    );
    assert!(
        global.contains("--catalog") && !global.contains("--max-count"),
        "{help}"
    );
}

// ------------------------------------------------------------------------------------------------
// 9.4: exit codes a script can use.

#[test]
fn exit_codes_tell_the_kinds_of_failure_apart() {
    let env = Env::new();
    let help = env.ok(&["--help"]);
    assert!(help.contains("Exit codes:"), "{help}");
    for code in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "130"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code}  "))),
            "{code} missing from --help: {help}"
        );
    }
    // 9: no catalog yet.
    env.fails_with(9, &["log"]);
    // 2: usage.
    let out = env.cmd().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    env.fails_with(2, &["init", "bad name"]);
    two_commits(&env);
    env.fails_with(2, &["log", "main!"]);
    env.fails_with(2, &["log", "main@{next tuesday}"]);
    for d in ["d1", "d2"] {
        std::fs::create_dir_all(env.path(d)).unwrap();
        std::fs::write(env.path(d).join("x.bin"), d).unwrap();
    }
    let e = env.fails_with(2, &["import", "d1/x.bin", "d2/x.bin"]);
    assert!(e.contains("both called \"x.bin\""), "{e}");
    let e = env.fails_with(2, &["bisect", "main", "main", "--sql", "SELECT true"]);
    assert!(e.contains("the same commit: nothing to search"), "{e}");
    let out = env.cmd().args(["gc", "--retain", "5x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // 6: not found.
    env.fails_with(6, &["log", "nosuchrev"]);
    env.fails_with(6, &["-r", "nope", "log"]);
    env.fails_with(6, &["tag", "-d", "v9"]);
    // 4: nothing to commit.
    env.fails_with(4, &["commit", "-m", "x"]);
    // 3: refused or conflict.
    env.fails_with(3, &["init", "db"]);
    env.fails_with(3, &["branch", "-d", "main"]);
    env.fails_with(3, &["export", "main", s(&env.work())]);
    let m = env.path("m");
    let mount = env.mount("db", &m, &[]);
    let e = env.fails_with(3, &["reset", "main", "main~1"]);
    assert!(e.contains("mounted writable"), "{e}");
    mount.unmount();
    // 7: expired.
    env.ok(&["gc", "--retain", "0s", "--grace", "0s"]);
    let e = env.fails_with(7, &["export", "main~1", s(&env.path("x"))]);
    assert!(e.contains("expired"), "{e}");
    // 5: corruption found.
    let layers = env.home().join("objects").join("layers");
    let victim = std::fs::read_dir(&layers)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&victim, bytes).unwrap();
    let out = env.cmd().args(["verify", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    // 8: a backend cannot be reached.
    let out = env
        .cmd()
        .env("QUACKFS_CONNECT_TIMEOUT", "1s")
        .args(["--catalog", "postgres://u:p@127.0.0.1:1/db", "repos"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    // 0: success.
    assert!(env.cmd().args(["log"]).output().unwrap().status.success());
}

/// `quackfs --catalog URL repos` (connect attempts bounded to 1 s): its exit code, the first line
/// of its stderr, and all of it.
fn repos_on_catalog(env: &Env, url: &str) -> (Option<i32>, String, String) {
    let out = env
        .cmd()
        .env("QUACKFS_CONNECT_TIMEOUT", "1s")
        .args(["--catalog", url, "repos"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let first = stderr.lines().next().unwrap_or_default().to_string();
    (out.status.code(), first, stderr)
}

/// A catalog URL naming a PostgreSQL database that does not exist: one line saying so in the
/// server's words, without sqlx's "error returned from database" or the line of the server's own
/// source file that raised it.
#[test]
fn a_missing_postgres_database_is_named_plainly() {
    let Ok(pg) = std::env::var("QUACKFS_TEST_PG_URL") else {
        return;
    };
    let (base, _) = pg.rsplit_once('/').unwrap();
    let name = format!("qfs_missing_{}", common::uuid_like());
    let (code, first, stderr) = repos_on_catalog(&Env::new(), &format!("{base}/{name}"));
    // 9: the configuration names something that is not there.
    assert_eq!(code, Some(9), "{stderr}");
    assert!(
        first.ends_with(&format!(": database \"{name}\" does not exist")),
        "{stderr}"
    );
    assert!(!stderr.contains("error returned from database"), "{stderr}");
    assert!(!stderr.contains(" at line "), "{stderr}");
}

/// A role PostgreSQL does not know is a configuration mistake (exit 9), said in the server's
/// words, like a missing database.
#[test]
fn a_wrong_postgres_role_is_a_configuration_error() {
    let Ok(pg) = std::env::var("QUACKFS_TEST_PG_URL") else {
        return;
    };
    let (_, host_db) = pg.rsplit_once('@').unwrap();
    let role = format!("qfs_nobody_{}", common::uuid_like());
    let (code, first, stderr) =
        repos_on_catalog(&Env::new(), &format!("postgres://{role}:pw@{host_db}"));
    assert_eq!(code, Some(9), "{stderr}");
    assert!(
        first.ends_with(&format!(": role \"{role}\" does not exist")),
        "{stderr}"
    );
    assert!(!stderr.contains("pw@"), "{stderr}");
}

/// A catalog server that cannot be reached: after the connect timeout the error says why the
/// connection failed (not only that sqlx's pool timed out), and exits 8 (retry later).
#[test]
fn an_unreachable_catalog_says_why() {
    let (code, first, stderr) = repos_on_catalog(&Env::new(), "postgres://u:p@127.0.0.1:1/db");
    assert_eq!(code, Some(8), "{stderr}");
    assert_eq!(
        first,
        "error: catalog postgres://u:***@127.0.0.1:1/db: cannot connect (tried for 1s): \
         Connection refused (os error 111)",
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: check that the catalog server is up"),
        "{stderr}"
    );
}

/// Names of the databases in the catalog.
fn database_names(env: &Env) -> Vec<String> {
    let repos: serde_json::Value = serde_json::from_str(&env.ok(&["repos", "--json"])).unwrap();
    repos
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// `init NAME --import FILE…` that cannot import its files (a WAL left beside a database, a file
/// that is not there, Ctrl-C) leaves no database behind and does not change the current one:
/// the same command, put right, then simply works.
fn a_failed_init_import_leaves_no_database(env: Env) {
    env.ok(&["init", "first"]);
    std::fs::write(env.path("shop.duckdb"), random_bytes(64 << 10, 5)).unwrap();
    std::fs::write(env.path("shop.duckdb.wal"), b"committed, not checkpointed").unwrap();
    let e = env.fails(&["init", "shop", "--import", "shop.duckdb"]);
    assert!(
        e.contains("shop.duckdb.wal holds transactions that are not in"),
        "{e}"
    );
    let e = env.fails(&["init", "other", "--import", "missing.bin"]);
    assert!(e.contains("missing.bin"), "{e}");
    assert_eq!(database_names(&env), ["first"]);
    // Interrupted while it reads the files: the database goes again.
    let big = sparse_file(&env);
    let tmp = env.home().join("tmp");
    let mut child = env
        .std_cmd()
        .args(["init", "big", "--import"])
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&tmp, "layer-", &mut child);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(tmp_files(&tmp, "layer-"), Vec::<String>::new());
    assert_eq!(database_names(&env), ["first"]);
    let status = env.ok(&["status"]);
    assert!(status.starts_with("database first "), "{status}");
    // Put right, the same names work.
    env.ok(&["init", "shop", "--import", "shop.duckdb", "shop.duckdb.wal"]);
    env.ok(&["init", "big"]);
    assert_eq!(database_names(&env), ["big", "first", "shop"]);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "shop@main", "--json"])).unwrap();
    assert_eq!(show["files"].as_array().unwrap().len(), 2, "{show}");
}

on_both_backends!(
    a_failed_init_import_leaves_no_database_embedded,
    a_failed_init_import_leaves_no_database_pg_s3,
    a_failed_init_import_leaves_no_database
);

/// A database's name given as a revision means its `main` (step 4 of docs/revisions.md) with
/// suffixes and `--at` too: `other~1`, `export other DIR --at TIME`, `mount other DIR --at TIME`.
/// A base name the current database knows never falls through, even when a suffix fails there.
fn a_database_name_takes_suffixes_and_at(env: Env) {
    std::fs::write(env.path("f.bin"), b"version one").unwrap();
    env.ok(&["init", "other", "--import", "f.bin", "-m", "first"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(env.path("f.bin"), b"version two").unwrap();
    env.ok(&["import", "f.bin", "-m", "second"]);
    env.ok(&["init", "shop"]);

    let out = env
        .cmd()
        .args(["log", "other~1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log[0]["message"], "first", "{log}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "note: \"other\" is not a revision of database \"shop\"; using database \"other\""
        ),
        "{}",
        text(&out)
    );
    let dir = env.path("then");
    env.ok(&["export", "other", s(&dir), "--at", &between]);
    assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), b"version one");
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = env.mount("other", &mnt, &["--at", &between]);
    assert_eq!(std::fs::read(mnt.join("f.bin")).unwrap(), b"version one");
    m.unmount();

    // Neither a revision nor a database: no such revision (6).
    let e = env.fails_with(6, &["log", "nosuch~1"]);
    assert!(
        e.contains("unknown revision \"nosuch~1\" in database \"shop\""),
        "{e}"
    );
    // A branch of the current database called like the other database wins; its suffix fails
    // there (6), it does not fall through.
    env.ok(&["branch", "other"]);
    let e = env.fails_with(6, &["log", "other~1"]);
    assert!(
        e.contains("other~1: other has only 0 commit(s) before it"),
        "{e}"
    );
}

on_both_backends!(
    a_database_name_takes_suffixes_and_at_embedded,
    a_database_name_takes_suffixes_and_at_pg_s3,
    a_database_name_takes_suffixes_and_at
);
