-- quackfs catalog, SQLite flavour. Times are milliseconds since the Unix epoch (UTC).
-- Keep in step with migrations/postgres/0001_init.sql: the queries are shared.

CREATE TABLE repos (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL
);

-- One row per commit. parent_id may point into another database (a clone starts at a commit of
-- its source), so there is no foreign key on it.
CREATE TABLE commits (
    id            TEXT    PRIMARY KEY,
    repo_id       BIGINT  NOT NULL REFERENCES repos(id),
    parent_id     TEXT,
    depth         BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    author        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    bytes_added   BIGINT  NOT NULL,
    logical_size  BIGINT  NOT NULL
);
CREATE INDEX commits_by_repo ON commits (repo_id, created_at);
CREATE INDEX commits_by_parent ON commits (parent_id);

-- The files of each commit: name, identity (stable across renames) and exact size.
CREATE TABLE commit_files (
    commit_id  TEXT    NOT NULL REFERENCES commits(id),
    path       TEXT    NOT NULL,
    file_id    BIGINT  NOT NULL,
    size       BIGINT  NOT NULL,
    PRIMARY KEY (commit_id, path)
);

-- Layers: immutable objects in the store. A layer belongs to one commit (commit_id), or, while
-- the commit is still open, to a branch (pending segment: commit_id NULL, branch set).
CREATE TABLE layers (
    id          TEXT    PRIMARY KEY,
    repo_id     BIGINT  NOT NULL,
    commit_id   TEXT,
    branch      TEXT,
    seq         BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    object_key  TEXT    NOT NULL,
    size_bytes  BIGINT  NOT NULL,
    min_time    BIGINT  NOT NULL,
    max_time    BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX layers_by_commit ON layers (commit_id, seq);
CREATE INDEX layers_pending ON layers (repo_id, branch, seq);

-- Branches and tags share one namespace per database.
CREATE TABLE refs (
    repo_id     BIGINT  NOT NULL REFERENCES repos(id),
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    commit_id   TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, name)
);

-- Every move of a branch: where it pointed, when, and why.
CREATE TABLE reflog (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id     BIGINT  NOT NULL,
    branch      TEXT    NOT NULL,
    old_commit  TEXT,
    new_commit  TEXT,
    at          BIGINT  NOT NULL,
    reason      TEXT    NOT NULL
);
CREATE INDEX reflog_by_branch ON reflog (repo_id, branch, at);
