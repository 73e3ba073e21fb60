//! History commands on the embedded default: init, import, log, show, status, branch, tag,
//! reflog, use, repos, commit --allow-empty, completions.

mod common;
use common::Env;

#[test]
fn history_commands() {
    let env = Env::new();
    std::fs::write(env.path("f.bin"), vec![7u8; 100_000]).unwrap();
    env.ok(&["init", "hist", "--import", "f.bin", "-m", "first"]);
    std::fs::write(env.path("f.bin"), vec![8u8; 50_000]).unwrap();
    let c2 = env
        .ok(&["import", "f.bin", "-m", "second"])
        .trim()
        .to_string();
    assert_eq!(c2.len(), 32);

    // show: parent, files and sizes, layers.
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "main", "--json"])).unwrap();
    assert_eq!(show["commit"]["id"], c2.as_str());
    assert_eq!(show["files"][0]["name"], "f.bin");
    assert_eq!(show["files"][0]["size"], 50_000);
    assert_eq!(show["layers"].as_array().unwrap().len(), 1);
    let text = env.ok(&["show"]);
    assert!(text.contains("second") && text.contains("f.bin"), "{text}");

    // Branches and tags.
    env.ok(&["branch", "exp", "main~1"]);
    env.ok(&["tag", "v1"]);
    let branches: serde_json::Value = serde_json::from_str(&env.ok(&["branch", "--json"])).unwrap();
    let names: Vec<&str> = branches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["exp", "main"]);
    assert_eq!(branches[0]["message"], "first");
    let tags: serde_json::Value = serde_json::from_str(&env.ok(&["tag", "--json"])).unwrap();
    assert_eq!(tags[0]["commit"], c2.as_str());
    let listing = env.ok(&["branch"]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with('*') && l.contains("main")),
        "{listing}"
    );

    // Import onto the other branch leaves main alone.
    std::fs::write(env.path("f.bin"), vec![9u8; 10]).unwrap();
    env.ok(&["import", "-b", "exp", "f.bin"]);
    let out = env.path("main-out");
    env.ok(&["export", "main", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), vec![8u8; 50_000]);
    let out = env.path("exp-out");
    env.ok(&["export", "exp", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), vec![9u8; 10]);
    let out = env.path("v1-out");
    env.ok(&["export", "hist@v1", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), vec![8u8; 50_000]);

    // Time travel through the reflog: before the second import, main was at "first".
    let reflog: serde_json::Value = serde_json::from_str(&env.ok(&["reflog", "--json"])).unwrap();
    let entries = reflog.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let second_at = entries[0]["at"].as_i64().unwrap();
    let before = chrono::DateTime::from_timestamp_millis(second_at - 1)
        .unwrap()
        .to_rfc3339();
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1", &format!("main@{{{before}}}")]))
            .unwrap();
    assert_eq!(log[0]["message"], "first");

    // use switches the current branch; commit --allow-empty records on it.
    env.ok(&["use", "hist@exp"]);
    let c = env
        .ok(&["commit", "--allow-empty", "-m", "marker"])
        .trim()
        .to_string();
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    assert_eq!(log[0]["id"], c.as_str());
    assert_eq!(log[0]["kind"], "manual");

    // status and repos.
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(st["database"], "hist");
    assert_eq!(st["branch"], "exp");
    let repos: serde_json::Value = serde_json::from_str(&env.ok(&["repos", "--json"])).unwrap();
    assert_eq!(repos[0]["name"], "hist");
    assert_eq!(repos[0]["branches"], 2);
    assert_eq!(repos[0]["commits"], 5);
    assert_eq!(repos[0]["logical_bytes"], 50_000);

    // Deleting: tags and non-last branches.
    env.ok(&["tag", "-d", "v1"]);
    env.ok(&["use", "hist"]);
    env.ok(&["branch", "-d", "exp"]);
    let branches: serde_json::Value = serde_json::from_str(&env.ok(&["branch", "--json"])).unwrap();
    assert_eq!(branches.as_array().unwrap().len(), 1);
}

#[test]
fn completions_for_every_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.ok(&["completions", shell]);
        assert!(out.contains("import"), "{shell}");
    }
}

/// `show` names each layer so that it can be told apart: the layers one mount writes share the
/// first 16 digits of their ids (the mount's session), so a 12-digit prefix named them all alike.
#[test]
fn show_tells_the_layers_of_one_mount_apart() {
    use std::io::Write;
    let env = Env::new();
    env.ok(&["init", "lay"]);
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let m = env.mount("lay", &dir, &[]);
    for (name, byte) in [("a.bin", 1u8), ("b.bin", 2), ("c.bin", 3)] {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        f.write_all(&vec![byte; 10_000]).unwrap();
        f.sync_all().unwrap();
    }
    env.ok(&["commit", "-m", "three syncs"]);
    m.unmount();
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "main", "--json"])).unwrap();
    let ids: Vec<&str> = show["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{show}");
    let text = env.ok(&["show", "main"]);
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("LAYER"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, ids, "{text}");
}

/// With no `QUACKFS_AUTHOR`, `USER` or `LOGNAME` (a service, a container), a commit's author is
/// the process's account, not "unknown".
#[test]
fn the_author_without_user_variables_is_the_account() {
    let env = Env::new();
    env.ok(&["init", "who"]);
    let out = env
        .std_cmd()
        .env_remove("QUACKFS_AUTHOR")
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["commit", "--allow-empty", "-m", "by whom"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let account = String::from_utf8(account.stdout).unwrap();
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    let author = log[0]["author"].as_str().unwrap();
    assert!(
        author.starts_with(&format!("{}@", account.trim())),
        "author {author:?}, account {account:?}"
    );
}
