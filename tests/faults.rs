//! Fault tests: a store that fails mid-import leaves the catalog unchanged and the next import
//! works; a corrupt object is reported by name and never exported as good data.

mod common;
use quackfs::catalog;
use quackfs::engine::Engine;
use quackfs::store::{DynStore, FaultyStore, LocalStore};
use std::sync::Arc;

async fn setup(dir: &std::path::Path) -> (Engine, Arc<FaultyStore>) {
    let local: DynStore = Arc::new(LocalStore::open(dir.join("objects")).unwrap());
    let faulty = Arc::new(FaultyStore::new(local));
    let cat = catalog::open(&format!(
        "sqlite://{}",
        dir.join("catalog.sqlite").display()
    ))
    .await
    .unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let engine = Engine::new(cat, faulty.clone(), dir.join("tmp"), "t".into());
    (engine, faulty)
}

#[tokio::test]
async fn failed_upload_leaves_catalog_unchanged_and_next_import_works() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faulty) = setup(dir.path()).await;
    let (repo, root) = engine.init("f").await.unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![5u8; 3 * 1024 * 1024]).unwrap();
    let pb = indicatif::ProgressBar::hidden();

    faulty.fail_all(true);
    let err = engine
        .import(&repo, "main", std::slice::from_ref(&file), None, &pb)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    faulty.fail_all(false);

    // The branch did not move, no commit or layer was registered, no temp file is left.
    assert_eq!(engine.branch_head(&repo, "main").await.unwrap().id, root.id);
    let stats = engine.catalog.repo_stats(repo.id).await.unwrap();
    assert_eq!((stats.commits, stats.stored_bytes), (1, 0));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );

    let out = engine
        .import(&repo, "main", std::slice::from_ref(&file), None, &pb)
        .await
        .unwrap();
    let commit = out.commit.expect("committed");
    let view = engine.view(&commit).await.unwrap();
    let f = view.file("data.bin").unwrap();
    let mut buf = vec![0u8; 3 * 1024 * 1024];
    view.read(f, 0, &mut buf).await.unwrap();
    assert!(buf.iter().all(|&b| b == 5));
}

#[tokio::test]
async fn failed_read_during_import_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faulty) = setup(dir.path()).await;
    let (repo, _) = engine.init("g").await.unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![1u8; 2 * 1024 * 1024]).unwrap();
    let pb = indicatif::ProgressBar::hidden();
    let first = engine
        .import(&repo, "main", std::slice::from_ref(&file), None, &pb)
        .await
        .unwrap();
    let head = first.commit.unwrap();

    // Re-import compares against the head, reading it from the store: fail one of those reads.
    std::fs::write(&file, vec![2u8; 2 * 1024 * 1024]).unwrap();
    let fresh = Engine::new(
        engine.catalog.clone(),
        faulty.clone(),
        dir.path().join("tmp"),
        "t".into(),
    );
    faulty.fail_nth(3);
    let err = fresh
        .import(&repo, "main", std::slice::from_ref(&file), None, &pb)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(engine.branch_head(&repo, "main").await.unwrap().id, head.id);
    let again = fresh
        .import(&repo, "main", std::slice::from_ref(&file), None, &pb)
        .await
        .unwrap();
    assert!(again.commit.is_some());
}

#[test]
fn corrupt_object_is_named_and_export_leaves_nothing() {
    let env = common::Env::new();
    std::fs::write(
        env.path("x.bin"),
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    env.ok(&["init", "c", "--import", "x.bin"]);
    // Flip one byte in the middle of the (only) layer object.
    let layers = env.home().join("objects").join("layers");
    let obj = std::fs::read_dir(&layers)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&obj, bytes).unwrap();
    let out = env.path("out");
    let e = env.fails(&["export", "main", out.to_str().unwrap()]);
    let name = obj.file_name().unwrap().to_str().unwrap();
    assert!(
        e.contains("corrupt data: layer object layers/") && e.contains(name),
        "{e}"
    );
    assert!(e.contains("checksum"), "{e}");
    assert!(!out.join("x.bin").exists(), "no half-written export");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "no temporary file left"
    );
}
