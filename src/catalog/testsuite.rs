//! Behaviour every [`Catalog`] implementation must have. Run by unit tests against SQLite and by
//! integration tests against PostgreSQL (when a server is configured).
//!
//! Each check panics with a message on failure (this is test support code).

use super::*;
use crate::layer::LayerKind;

fn commit(id: &str, t: Millis) -> NewCommit {
    NewCommit {
        id: id.into(),
        kind: CommitKind::Manual,
        message: format!("msg {id}"),
        author: "tester".into(),
        time: t,
        merge_parent: None,
    }
}

fn layer(id: &str, seq: i64, repo_id: i64) -> LayerRow {
    LayerRow {
        id: id.into(),
        repo_id,
        commit_id: None,
        seq,
        kind: LayerKind::Delta,
        object_key: format!("layers/{id}"),
        size_bytes: 100 + seq,
        min_time: 1,
        max_time: 2,
        created_at: 3,
    }
}

/// Runs the whole suite. `tag` makes names unique so the suite can share a server.
pub async fn run(cat: DynCatalog, tag: &str) {
    let name = format!("suite-{tag}");
    let root_id = format!("{tag}00000000000000000000000000000000")[..32].to_string();
    let (repo, root) = cat
        .create_repo(&name, commit(&root_id, 1_000))
        .await
        .expect("create repo");
    assert_eq!(repo.name, name);
    assert_eq!(root.depth, 0);
    assert!(matches!(
        cat.create_repo(&name, commit("other", 1_000)).await,
        Err(CatalogError::Exists {
            what: "database",
            ..
        })
    ));
    assert_eq!(cat.repo(&name).await.unwrap().unwrap(), repo);
    assert_eq!(cat.repo_by_id(repo.id).await.unwrap().unwrap(), repo);
    assert!(cat.repo("no-such-repo-xyz").await.unwrap().is_none());
    assert!(cat.repos().await.unwrap().iter().any(|r| r.name == name));

    // main exists at the root, with a reflog entry.
    let main = cat.get_ref(repo.id, "main").await.unwrap().expect("main");
    assert_eq!(
        (main.kind, main.commit_id.as_str()),
        (RefKind::Branch, root.id.as_str())
    );
    assert_eq!(cat.reflog(repo.id, "main").await.unwrap().len(), 1);

    // A commit with files and layers; its time is raised to stay monotonic.
    let c1 = cat
        .make_commit(CommitRequest {
            repo_id: repo.id,
            branch: "main".into(),
            expected_head: root.id.clone(),
            commit: commit(&format!("{tag}-c1"), 500),
            files: vec![FileRow {
                path: "a.duckdb".into(),
                file_id: 7,
                size: 4096,
            }],
            layers: vec![
                layer(&format!("{tag}-l1"), 0, repo.id),
                layer(&format!("{tag}-l2"), 1, repo.id),
            ],
            reason: "commit: one".into(),
        })
        .await
        .expect("commit 1");
    assert_eq!(
        c1.created_at, 1_001,
        "commit time is monotonic along the branch"
    );
    assert_eq!(c1.depth, 1);
    assert_eq!(c1.bytes_added, 201);
    assert_eq!(c1.logical_size, 4096);
    assert_eq!(cat.commit(&c1.id).await.unwrap().unwrap(), c1);
    assert_eq!(cat.commit_files(&c1.id).await.unwrap()[0].file_id, 7);
    let ls = cat.commit_layers(&c1.id).await.unwrap();
    assert_eq!(ls.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(ls[0].commit_id.as_deref(), Some(c1.id.as_str()));

    // A stale head is refused and changes nothing.
    let stale = cat
        .make_commit(CommitRequest {
            repo_id: repo.id,
            branch: "main".into(),
            expected_head: root.id.clone(),
            commit: commit(&format!("{tag}-lost"), 2_000),
            files: vec![],
            layers: vec![layer(&format!("{tag}-l3"), 0, repo.id)],
            reason: "commit: stale".into(),
        })
        .await;
    assert!(matches!(stale, Err(CatalogError::Conflict(_))), "{stale:?}");
    assert!(cat.commit(&format!("{tag}-lost")).await.unwrap().is_none());
    assert!(cat
        .commit_layers(&format!("{tag}-lost"))
        .await
        .unwrap()
        .is_empty());

    let c2 = cat
        .make_commit(CommitRequest {
            repo_id: repo.id,
            branch: "main".into(),
            expected_head: c1.id.clone(),
            commit: commit(&format!("{tag}-c2"), 5_000),
            files: vec![FileRow {
                path: "a.duckdb".into(),
                file_id: 7,
                size: 8192,
            }],
            layers: vec![layer(&format!("{tag}-l4"), 0, repo.id)],
            reason: "commit: two".into(),
        })
        .await
        .expect("commit 2");
    assert_eq!(c2.created_at, 5_000);
    let chain = cat.ancestors(&c2.id, 100).await.unwrap();
    assert_eq!(
        chain.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![c2.id.clone(), c1.id.clone(), root.id.clone()]
    );
    assert_eq!(cat.ancestors(&c2.id, 2).await.unwrap().len(), 2);
    let cl = cat.chain_layers(&c2.id).await.unwrap();
    assert_eq!(
        cl.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![
            format!("{tag}-l1"),
            format!("{tag}-l2"),
            format!("{tag}-l4")
        ],
        "oldest commit first, seq order within"
    );

    // Prefix lookup.
    let found = cat
        .commits_by_prefix(repo.id, &format!("{tag}-c"), 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);

    // Refs: one namespace for branches and tags.
    cat.create_ref(repo.id, "v1", RefKind::Tag, &c1.id, "tag", 6_000)
        .await
        .unwrap();
    assert!(matches!(
        cat.create_ref(repo.id, "v1", RefKind::Branch, &c1.id, "branch", 6_000)
            .await,
        Err(CatalogError::Exists { what: "tag", .. })
    ));
    assert!(matches!(
        cat.create_ref(repo.id, "x", RefKind::Branch, "nonexistent", "b", 6_000)
            .await,
        Err(CatalogError::NotFound { what: "commit", .. })
    ));
    cat.create_ref(
        repo.id,
        "exp",
        RefKind::Branch,
        &c1.id,
        "branch from c1",
        6_001,
    )
    .await
    .unwrap();
    let refs = cat.refs(repo.id).await.unwrap();
    assert_eq!(refs.len(), 3);
    let stats = cat.repo_stats(repo.id).await.unwrap();
    assert_eq!(
        stats,
        RepoStats {
            branches: 2,
            tags: 1,
            commits: 3,
            stored_bytes: 100 + 101 + 100
        }
    );
    assert!(matches!(
        cat.delete_ref(repo.id, "v1", RefKind::Branch, 7_000).await,
        Err(CatalogError::NotFound { .. })
    ));
    cat.delete_ref(repo.id, "exp", RefKind::Branch, 7_000)
        .await
        .unwrap();
    let log = cat.reflog(repo.id, "exp").await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].new_commit, None, "deletion is logged, newest first");
    assert_eq!(log[1].new_commit.as_deref(), Some(c1.id.as_str()));
    let main_log = cat.reflog(repo.id, "main").await.unwrap();
    assert_eq!(main_log.len(), 3);
    assert_eq!(main_log[0].new_commit.as_deref(), Some(c2.id.as_str()));
    assert_eq!(main_log[0].reason, "commit: two");
}

/// Two commits racing on one branch from the same head: exactly one wins.
pub async fn concurrent_commits(cat: DynCatalog, tag: &str) {
    let name = format!("race-{tag}");
    let (repo, root) = cat
        .create_repo(&name, commit(&format!("{tag}-root"), 1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let cat = cat.clone();
        let root = root.id.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            cat.make_commit(CommitRequest {
                repo_id: repo.id,
                branch: "main".into(),
                expected_head: root,
                commit: commit(&format!("{tag}-race{i}"), 10),
                files: vec![],
                layers: vec![layer(&format!("{tag}-rl{i}"), 0, repo.id)],
                reason: format!("commit: race {i}"),
            })
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CatalogError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one of the racing commits wins");
    assert_eq!(
        cat.ancestors(
            &cat.get_ref(repo.id, "main")
                .await
                .unwrap()
                .unwrap()
                .commit_id,
            10
        )
        .await
        .unwrap()
        .len(),
        2
    );
    assert_eq!(
        cat.repo_stats(repo.id).await.unwrap().stored_bytes,
        100,
        "losers leave no layers"
    );
}

/// The binding of a fresh catalog: blank, then one identity whoever claims it, then bound.
pub async fn binding(cat: DynCatalog) {
    let st = cat.binding().await.expect("binding");
    assert!(st.is_blank(), "{st:?}");
    assert_eq!(cat.claim_id("first", "file:///a").await.unwrap(), "first");
    assert_eq!(cat.claim_id("second", "file:///b").await.unwrap(), "first");
    let st = cat.binding().await.unwrap();
    assert_eq!(st.catalog_id.as_deref(), Some("first"));
    assert_eq!(st.store.as_deref(), Some("file:///a"));
    assert!(!st.bound && !st.is_blank());
    cat.confirm_bound().await.unwrap();
    assert!(cat.binding().await.unwrap().bound);
}
