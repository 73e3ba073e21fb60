//! Behaviour every [`Catalog`] implementation must have. Run by unit tests against SQLite and by
//! integration tests against PostgreSQL (when a server is configured).
//!
//! Each check panics with a message on failure (this is test support code).

use super::*;
use crate::layer::LayerKind;

/// A manual commit `id` at time `t` (for tests of the catalog).
pub(crate) fn commit(id: &str, t: Millis) -> NewCommit {
    NewCommit {
        id: id.into(),
        kind: CommitKind::Manual,
        message: format!("msg {id}"),
        author: "tester".into(),
        time: t,
        merge_parent: None,
    }
}

/// A delta layer row `layers/ID` (for tests of the catalog).
pub(crate) fn layer(id: &str, seq: i64, repo_id: i64) -> LayerRow {
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
            stored_bytes: 100 + 101 + 100,
            inline_bytes: 0,
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

/// A new database `name` whose first commit (`{prefix}c`) holds `n` layers `{prefix}l0000`…,
/// in id order (seq follows the id); its repo and the layer ids.
async fn repo_with_layers(
    cat: &DynCatalog,
    name: &str,
    prefix: &str,
    n: usize,
) -> (Repo, Vec<String>) {
    let (repo, root) = cat
        .create_repo(name, commit(&format!("{prefix}root"), 1))
        .await
        .unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}l{i:04}")).collect();
    cat.make_commit(CommitRequest {
        repo_id: repo.id,
        branch: "main".into(),
        expected_head: root.id.clone(),
        commit: commit(&format!("{prefix}c"), 10),
        files: vec![],
        layers: ids
            .iter()
            .enumerate()
            .map(|(i, id)| layer(id, i as i64, repo.id))
            .collect(),
        reason: format!("commit: {name}"),
    })
    .await
    .unwrap();
    (repo, ids)
}

/// Calls that change several layer rows (a mount's spill, merge's layer replacement, gc's
/// marks, a checkpoint commit adopting pending layers) run beside each other in any order of ids
/// and never deadlock: each changes its rows in one order. (PostgreSQL row locks; SQLite has one
/// writer and passes trivially.)
pub async fn layer_updates_in_any_order(cat: DynCatalog, tag: &str) {
    let (repo, ids) =
        repo_with_layers(&cat, &format!("order-{tag}"), &format!("{tag}-o"), 24).await;
    let mut reversed = ids.clone();
    reversed.reverse();
    let session = format!("{tag}-oses");
    cat.open_session(&session, repo.id, "reader", "suite", None)
        .await
        .unwrap();
    for round in 0..30 {
        let mut tasks = Vec::new();
        for (k, order) in [ids.clone(), reversed.clone()].into_iter().enumerate() {
            let cat = cat.clone();
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                match (round + k) % 3 {
                    0 => cat.spilled(&order).await,
                    1 => cat.set_doomed(&order, None).await,
                    // A reader registering the layers it reads (clearing gc's marks).
                    _ => cat.register_session_layers(&session, &order).await,
                }
            }));
        }
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }

    // A checkpoint commit adopts a branch's pending layers (chosen by a condition, so scanned in
    // seq order), and every other round a compaction first supersedes them, while a spill names
    // the same layers stored. Ids fall as seq rises, so the scan order is the reverse of id
    // order.
    let lease = cat
        .acquire_lease(repo.id, "main", "suite", 60_000)
        .await
        .unwrap();
    for round in 0..30 {
        let ids: Vec<String> = (0..24)
            .map(|i| format!("{tag}-p{round:02}-{:02}", 99 - i))
            .collect();
        cat.register_sync(SyncRequest {
            repo_id: repo.id,
            branch: "main".into(),
            generation: lease.generation,
            layers: ids
                .iter()
                .map(|id| SyncLayer {
                    row: layer(id, 0, repo.id),
                    inline: None,
                })
                .collect(),
            files: vec![],
            now: 4,
            session_id: None,
        })
        .await
        .unwrap();
        let spill = {
            let (cat, ids) = (cat.clone(), ids.clone());
            tokio::spawn(async move { cat.spilled(&ids).await })
        };
        if round % 2 == 1 {
            // A compaction superseding them (chosen by id and by branch) beside the spill too.
            let merged = SyncRequest {
                repo_id: repo.id,
                branch: "main".into(),
                generation: lease.generation,
                layers: vec![SyncLayer {
                    row: layer(&format!("{tag}-pm{round:02}"), 0, repo.id),
                    inline: None,
                }],
                files: vec![],
                now: 5,
                session_id: None,
            };
            if let Err(e) = cat.replace_pending(merged, &ids).await {
                panic!("round {round}: compaction: {e}");
            }
        }
        let sealed = cat
            .commit_pending(
                repo.id,
                "main",
                commit(&format!("{tag}-pc{round:02}"), 20 + round),
                false,
            )
            .await;
        if let Err(e) = sealed {
            panic!("round {round}: commit: {e}");
        }
        if let Err(e) = spill.await.unwrap() {
            panic!("round {round}: spill: {e}");
        }
    }
}

/// The layers session `session` registered, sorted (as gc sees them).
async fn registered_by(cat: &DynCatalog, session: &str) -> Vec<String> {
    let mut v: Vec<String> = cat
        .gc_snapshot()
        .await
        .unwrap()
        .session_layers
        .into_iter()
        .filter(|(s, _)| s == session)
        .map(|(_, l)| l)
        .collect();
    v.sort();
    v
}

/// A session registers the layers it reads in one transaction, however many (more than one
/// statement's worth here, with repeats): gc's marks on them go, and gc then keeps them. A layer
/// gc already removed makes the whole registration a `Conflict` that names it, registering none.
pub async fn session_layers(cat: DynCatalog, tag: &str) {
    let (repo, ids) =
        repo_with_layers(&cat, &format!("pin-{tag}"), &format!("{tag}-p"), 2_500).await;
    let registered = |session: String| {
        let cat = cat.clone();
        async move { registered_by(&cat, &session).await }
    };
    let doomed = &ids[1_000..1_010];
    cat.set_doomed(doomed, Some(5)).await.unwrap();

    // A missing layer (gc removed it) among the others: a conflict naming it, nothing kept.
    let gone = format!("{tag}-gone");
    let s1 = format!("{tag}-ps1");
    cat.open_session(&s1, repo.id, "reader", "suite", None)
        .await
        .unwrap();
    let mut with_gone = ids.clone();
    with_gone.insert(1_700, gone.clone());
    match cat.register_session_layers(&s1, &with_gone).await {
        Err(CatalogError::Conflict(why)) => assert!(why.contains(&gone), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        registered(s1.clone()).await.is_empty(),
        "nothing registered"
    );

    // All of them, in any order and with repeats: registered once each, marks cleared.
    let s2 = format!("{tag}-ps2");
    cat.open_session(&s2, repo.id, "reader", "suite", None)
        .await
        .unwrap();
    let mut order = ids.clone();
    order.reverse();
    order.extend(ids[..50].iter().cloned());
    cat.register_session_layers(&s2, &order).await.unwrap();
    cat.register_session_layers(&s2, &ids[..10]).await.unwrap();
    assert_eq!(registered(s2.clone()).await, ids);
    assert!(
        cat.delete_layers(doomed).await.unwrap().is_empty(),
        "a registration clears gc's marks: gc deletes none of them"
    );
    assert_eq!(
        cat.commit_layers(&format!("{tag}-pc")).await.unwrap().len(),
        ids.len()
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

/// The layers of a commit as (id, seq), in order.
async fn layer_seqs(cat: &DynCatalog, commit_id: &str) -> Vec<(String, i64)> {
    cat.commit_layers(commit_id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.id, l.seq))
        .collect()
}

/// The mount's commit path: syncs registered under the writer's lease (fenced otherwise), then
/// sealed by `commit_pending`. PostgreSQL runs it as one function call per step and SQLite as
/// statements: both must give these results.
pub async fn syncs_and_checkpoint_commits(cat: DynCatalog, tag: &str) {
    let name = format!("sync-{tag}");
    let (repo, root) = cat
        .create_repo(&name, commit(&format!("{tag}-sroot"), 1_000))
        .await
        .unwrap();
    let file = |path: &str, file_id: i64, size: i64| FileRow {
        path: path.into(),
        file_id,
        size,
    };
    let sync_layer = |id: &str, inline: Option<Vec<u8>>| SyncLayer {
        row: LayerRow {
            object_key: if inline.is_some() {
                format!("{INLINE_PREFIX}{id}")
            } else {
                format!("layers/{id}")
            },
            ..layer(id, 99, repo.id)
        },
        inline,
    };
    let sync = |generation: i64, layers: Vec<SyncLayer>, files: Vec<FileRow>| SyncRequest {
        repo_id: repo.id,
        branch: "main".into(),
        generation,
        layers,
        files,
        now: 2_000,
        session_id: None,
    };
    // Nothing pending yet: a checkpoint commit has nothing to seal.
    assert!(matches!(
        cat.commit_pending(
            repo.id,
            "main",
            commit(&format!("{tag}-none"), 2_000),
            false
        )
        .await,
        Err(CatalogError::NothingPending)
    ));
    // Without the lease, or with a stale generation, a sync is fenced.
    assert!(matches!(
        cat.register_sync(sync(1, vec![sync_layer(&format!("{tag}-s0"), None)], vec![]))
            .await,
        Err(CatalogError::Fenced(b)) if b == "main"
    ));
    let lease = cat
        .acquire_lease(repo.id, "main", "suite", 60_000)
        .await
        .unwrap();
    assert!(matches!(
        cat.register_sync(sync(
            lease.generation + 1,
            vec![sync_layer(&format!("{tag}-s0"), None)],
            vec![]
        ))
        .await,
        Err(CatalogError::Fenced(_))
    ));
    assert!(
        cat.pending(repo.id, "main").await.unwrap().is_none(),
        "a fenced sync leaves nothing"
    );

    // Two syncs: sequence numbers continue, inline bytes are kept, the file table is replaced.
    let (a, b, c) = (
        format!("{tag}-sa"),
        format!("{tag}-sb"),
        format!("{tag}-sc"),
    );
    let first = cat
        .register_sync(sync(
            lease.generation,
            vec![sync_layer(&a, Some(vec![1, 2, 3])), sync_layer(&b, None)],
            vec![file("x.duckdb", 7, 4096), file("x.duckdb.wal", 8, 10)],
        ))
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|l| (l.id.as_str(), l.seq))
            .collect::<Vec<_>>(),
        [(a.as_str(), 0), (b.as_str(), 1)]
    );
    let second = cat
        .register_sync(sync(
            lease.generation,
            vec![sync_layer(&c, Some(vec![9; 5000]))],
            vec![file("x.duckdb", 7, 8192)],
        ))
        .await
        .unwrap();
    assert_eq!((second[0].id.as_str(), second[0].seq), (c.as_str(), 2));
    assert_eq!(cat.inline_object(&a).await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(cat.inline_object(&c).await.unwrap(), Some(vec![9; 5000]));
    assert_eq!(
        cat.inline_object(&b).await.unwrap(),
        None,
        "stored, not inline"
    );
    let pending = cat
        .pending(repo.id, "main")
        .await
        .unwrap()
        .expect("pending");
    assert_eq!(pending.files, vec![file("x.duckdb", 7, 8192)]);
    assert_eq!(
        pending
            .layers
            .iter()
            .map(|l| (l.id.as_str(), l.seq, l.object_key.as_str()))
            .collect::<Vec<_>>(),
        [
            (a.as_str(), 0, format!("{INLINE_PREFIX}{a}").as_str()),
            (b.as_str(), 1, format!("layers/{b}").as_str()),
            (c.as_str(), 2, format!("{INLINE_PREFIX}{c}").as_str()),
        ]
    );
    assert_eq!(pending.synced_at, 2_000);
    assert_eq!(
        cat.repo_stats(repo.id).await.unwrap().inline_bytes,
        3 + 5000
    );

    // The checkpoint commit adopts them; its time is after its parent's even if the clock is not.
    let mut new = commit(&format!("{tag}-ckpt"), 500);
    new.kind = CommitKind::Checkpoint;
    let sealed = cat
        .commit_pending(repo.id, "main", new.clone(), false)
        .await
        .unwrap();
    assert_eq!(sealed.parent_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(sealed.depth, 1);
    assert_eq!(sealed.created_at, root.created_at + 1);
    assert_eq!(sealed.bytes_added, 100 + 99 + 100 + 99 + 100 + 99);
    assert_eq!(sealed.logical_size, 8192);
    assert_eq!(sealed.kind, CommitKind::Checkpoint);
    assert_eq!(
        cat.commit(&sealed.id).await.unwrap().as_ref(),
        Some(&sealed)
    );
    assert_eq!(
        cat.commit_files(&sealed.id).await.unwrap(),
        vec![file("x.duckdb", 7, 8192)]
    );
    assert_eq!(
        layer_seqs(&cat, &sealed.id).await,
        [(a.clone(), 0), (b.clone(), 1), (c.clone(), 2)]
    );
    assert_eq!(
        cat.get_ref(repo.id, "main")
            .await
            .unwrap()
            .unwrap()
            .commit_id,
        sealed.id
    );
    let log = cat.reflog(repo.id, "main").await.unwrap();
    assert_eq!(log[0].old_commit.as_deref(), Some(root.id.as_str()));
    assert_eq!(log[0].new_commit.as_deref(), Some(sealed.id.as_str()));
    assert_eq!(log[0].reason, format!("checkpoint: msg {tag}-ckpt"));
    assert!(cat.pending(repo.id, "main").await.unwrap().is_none());
    assert!(matches!(
        cat.commit_pending(
            repo.id,
            "main",
            commit(&format!("{tag}-again"), 9_000),
            false
        )
        .await,
        Err(CatalogError::NothingPending)
    ));

    // A sync after the commit starts again at seq 0. A file table of many files (more values
    // than one SQLite statement takes) arrives whole; an empty commit keeps the head's files.
    let d = format!("{tag}-sd");
    let many: Vec<FileRow> = (0..6_000)
        .map(|i| file(&format!("f{i:05}.duckdb"), 100 + i, 2))
        .collect();
    let next = cat
        .register_sync(sync(
            lease.generation,
            vec![sync_layer(&d, None)],
            many.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(next[0].seq, 0);
    assert_eq!(
        cat.pending(repo.id, "main").await.unwrap().unwrap().files,
        many
    );
    let c3 = cat
        .commit_pending(repo.id, "main", commit(&format!("{tag}-c3"), 9_000), false)
        .await
        .unwrap();
    assert_eq!(cat.commit_files(&c3.id).await.unwrap(), many);
    assert_eq!((c3.bytes_added, c3.logical_size), (199, 12_000));
    let empty = cat
        .commit_pending(
            repo.id,
            "main",
            commit(&format!("{tag}-empty"), 9_500),
            true,
        )
        .await
        .unwrap();
    assert_eq!((empty.bytes_added, empty.logical_size), (0, 12_000));
    assert_eq!(cat.commit_files(&empty.id).await.unwrap(), many);
    let mut tagged = commit(&format!("{tag}-merge"), 9_600);
    tagged.merge_parent = Some(root.id.clone());
    cat.register_sync(sync(
        lease.generation,
        vec![sync_layer(&format!("{tag}-se"), None)],
        vec![file("y.duckdb", 9, 1)],
    ))
    .await
    .unwrap();
    let merged = cat
        .commit_pending(repo.id, "main", tagged, false)
        .await
        .unwrap();
    assert_eq!(merged.merge_parent_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(
        cat.commit(&merged.id).await.unwrap().as_ref(),
        Some(&merged)
    );
    let kept = cat
        .commit_pending(repo.id, "main", commit(&format!("{tag}-keep"), 9_700), true)
        .await
        .unwrap();
    assert_eq!(
        cat.commit_files(&kept.id).await.unwrap(),
        vec![file("y.duckdb", 9, 1)]
    );

    // A sync with its checkpoint commit, in one transaction: the pending layers before it and
    // its own are adopted, the file table is the sync's, the reflog names the checkpoint.
    cat.register_sync(sync(
        lease.generation,
        vec![sync_layer(&format!("{tag}-rc0"), Some(vec![4; 10]))],
        vec![file("y.duckdb", 9, 1), file("y.duckdb.wal", 10, 30)],
    ))
    .await
    .unwrap();
    let mut ckpt = commit(&format!("{tag}-rc"), 9_800);
    ckpt.kind = CommitKind::Checkpoint;
    let (rc_layers, rc) = cat
        .register_and_commit(
            sync(
                lease.generation,
                vec![sync_layer(&format!("{tag}-rc1"), None)],
                vec![file("y.duckdb", 9, 4096)],
            ),
            ckpt,
        )
        .await
        .unwrap();
    assert_eq!(
        (rc_layers[0].id.clone(), rc_layers[0].seq),
        (format!("{tag}-rc1"), 1)
    );
    assert_eq!(rc.parent_id.as_deref(), Some(kept.id.as_str()));
    assert_eq!((rc.bytes_added, rc.logical_size), (2 * 199, 4096));
    assert_eq!(cat.commit(&rc.id).await.unwrap().as_ref(), Some(&rc));
    assert_eq!(
        cat.commit_files(&rc.id).await.unwrap(),
        vec![file("y.duckdb", 9, 4096)]
    );
    assert_eq!(
        layer_seqs(&cat, &rc.id).await,
        [(format!("{tag}-rc0"), 0), (format!("{tag}-rc1"), 1)]
    );
    assert_eq!(
        cat.inline_object(&format!("{tag}-rc0")).await.unwrap(),
        Some(vec![4; 10])
    );
    assert!(cat.pending(repo.id, "main").await.unwrap().is_none());
    assert_eq!(
        cat.reflog(repo.id, "main").await.unwrap()[0].reason,
        format!("checkpoint: msg {tag}-rc")
    );
    // Fenced: neither the sync nor the commit happens.
    assert!(matches!(
        cat.register_and_commit(
            sync(
                lease.generation + 1,
                vec![sync_layer(&format!("{tag}-rc2"), None)],
                vec![]
            ),
            commit(&format!("{tag}-rcf"), 9_900)
        )
        .await,
        Err(CatalogError::Fenced(_))
    ));
    assert!(cat.pending(repo.id, "main").await.unwrap().is_none());
    assert!(cat.commit(&format!("{tag}-rcf")).await.unwrap().is_none());
    assert_eq!(
        cat.get_ref(repo.id, "main")
            .await
            .unwrap()
            .unwrap()
            .commit_id,
        rc.id
    );

    // What a spill moves: live inline layers only; not those a compaction
    // superseded or gc marked (their bytes stay readable in the catalog), not stored ones.
    let ids: Vec<String> = (0..4).map(|i| format!("{tag}-sp{i}")).collect();
    cat.register_sync(sync(
        lease.generation,
        ids.iter()
            .map(|id| sync_layer(id, Some(vec![5; 7])))
            .chain([sync_layer(&format!("{tag}-sp-stored"), None)])
            .collect(),
        vec![file("y.duckdb", 9, 4096)],
    ))
    .await
    .unwrap();
    cat.replace_pending(
        sync(
            lease.generation,
            vec![sync_layer(&format!("{tag}-sp-merged"), Some(vec![6; 9]))],
            vec![],
        ),
        &ids[..2],
    )
    .await
    .unwrap();
    // A replacement of layers one of which is no longer pending changes nothing.
    assert!(matches!(
        cat.replace_pending(
            sync(
                lease.generation,
                vec![sync_layer(&format!("{tag}-sp-late"), None)],
                vec![],
            ),
            &[ids[3].clone(), ids[1].clone()],
        )
        .await,
        Err(CatalogError::Conflict(_))
    ));
    assert!(cat
        .inline_object(&format!("{tag}-sp-late"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        cat.pending(repo.id, "main")
            .await
            .unwrap()
            .unwrap()
            .layers
            .iter()
            .map(|l| (l.id.clone(), l.seq))
            .collect::<Vec<_>>(),
        [
            (format!("{tag}-sp-merged"), 0),
            (ids[2].clone(), 2),
            (ids[3].clone(), 3),
            (format!("{tag}-sp-stored"), 4)
        ],
        "the merged layer takes the first one's place; the others are untouched"
    );
    cat.set_doomed(&ids[2..3], Some(9_900)).await.unwrap();
    let candidates = || async {
        cat.inline_objects(i64::MAX, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|(id, _, _)| id.starts_with(&format!("{tag}-sp")))
            .map(|(id, repo_id, bytes)| (id, repo_id, bytes.len()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        candidates().await,
        [
            (ids[3].clone(), repo.id, 7),
            (format!("{tag}-sp-merged"), repo.id, 9)
        ]
        .into()
    );
    assert_eq!(cat.inline_object(&ids[0]).await.unwrap(), Some(vec![5; 7]));
    cat.spilled(&ids[3..]).await.unwrap();
    assert_eq!(
        candidates().await.len(),
        1,
        "a spilled layer is no candidate"
    );
    assert_eq!(cat.inline_object(&ids[3]).await.unwrap(), None);

    // After the lease is released, syncs are fenced; an unknown branch is not found (or fenced).
    cat.release_lease(repo.id, "main", lease.generation)
        .await
        .unwrap();
    assert!(matches!(
        cat.register_sync(sync(lease.generation, vec![], vec![]))
            .await,
        Err(CatalogError::Fenced(_))
    ));
    assert!(matches!(
        cat.commit_pending(repo.id, "nope", commit(&format!("{tag}-nope"), 1), true)
            .await,
        Err(CatalogError::NotFound { what: "branch", .. })
    ));
}

/// What a follower asks when the branch it serves moves on: the layers of the commits between
/// the commit it serves and the new one (only when the first is an ancestor, exactly that many
/// first parents below), and its session moving on to the new commit.
pub async fn follower_moves(cat: DynCatalog, tag: &str) {
    let p = format!("{tag}-f");
    let (repo, first) = repo_with_layers(&cat, &format!("follow-{tag}"), &p, 3).await;
    let c = cat.commit(&format!("{p}c")).await.unwrap().unwrap();
    let root = cat.commit(&format!("{p}root")).await.unwrap().unwrap();
    let on = |branch: &str, parent: &Commit, id: &str, layers: Vec<LayerRow>| {
        let cat = cat.clone();
        let req = CommitRequest {
            repo_id: repo.id,
            branch: branch.into(),
            expected_head: parent.id.clone(),
            commit: commit(id, parent.created_at + 10),
            files: vec![],
            layers,
            reason: format!("commit: {id}"),
        };
        async move { cat.make_commit(req).await.unwrap() }
    };
    let second = vec![format!("{p}m0"), format!("{p}m1")];
    let c2 = on(
        "main",
        &c,
        &format!("{p}c2"),
        vec![layer(&second[0], 0, repo.id), layer(&second[1], 1, repo.id)],
    )
    .await;
    let c3 = on("main", &c2, &format!("{p}c3"), vec![]).await;
    cat.create_ref(repo.id, "side", RefKind::Branch, &c.id, "branch", 100)
        .await
        .unwrap();
    let side = on(
        "side",
        &c,
        &format!("{p}s1"),
        vec![layer(&format!("{p}s0"), 0, repo.id)],
    )
    .await;

    let since = |id: &Commit, ancestor: &Commit, steps: i64| {
        let cat = cat.clone();
        let (id, ancestor) = (id.id.clone(), ancestor.id.clone());
        async move {
            cat.chain_layers_since(&id, &ancestor, steps)
                .await
                .unwrap()
                .map(|ls| ls.into_iter().map(|l| l.id).collect::<Vec<_>>())
        }
    };
    assert_eq!(since(&c3, &c, 2).await, Some(second.clone()));
    assert_eq!(
        since(&c3, &c2, 1).await,
        Some(vec![]),
        "an ancestor with nothing above it"
    );
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    assert_eq!(since(&c3, &root, 3).await, Some(all), "the chain's order");
    assert_eq!(since(&c3, &c, 1).await, None, "not that many steps below");
    assert_eq!(since(&c3, &root, 4).await, None, "past the root");
    assert_eq!(since(&side, &c2, 1).await, None, "a sibling");
    assert_eq!(since(&c3, &c3, 0).await, None);
    assert_eq!(
        since(&side, &c, 1).await,
        Some(vec![format!("{p}s0")]),
        "along another branch"
    );

    // A session moves on: the new layers registered, the new commit pinned.
    let s = format!("{tag}-fs");
    cat.open_session(&s, repo.id, "reader", "suite", Some(&c.id))
        .await
        .unwrap();
    cat.register_session_layers(&s, &first).await.unwrap();
    let pin = |s: String| {
        let cat = cat.clone();
        async move {
            cat.pins(repo.id)
                .await
                .unwrap()
                .into_iter()
                .find(|p| p.id == s)
                .map(|p| p.commit_id)
        }
    };
    assert_eq!(pin(s.clone()).await, Some(c.id.clone()));
    let gone = vec![second[0].clone(), format!("{tag}-gone")];
    match cat.move_session(&s, &c3.id, &gone).await {
        Err(CatalogError::Conflict(why)) => assert!(why.contains("gone"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        pin(s.clone()).await,
        Some(c.id.clone()),
        "a failed move changes nothing"
    );
    cat.move_session(&s, &c3.id, &second).await.unwrap();
    assert_eq!(pin(s.clone()).await, Some(c3.id.clone()));
    let held = registered_by(&cat, &s).await;
    let mut want = first.clone();
    want.extend(second.iter().cloned());
    want.sort();
    assert_eq!(held, want, "the session holds both views' layers");
    cat.close_session(&s).await.unwrap();
}
