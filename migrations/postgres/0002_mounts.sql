-- Writable mounts: one lease per branch, with a fencing generation that every write checks.
CREATE TABLE leases (
    repo_id       BIGINT  NOT NULL,
    branch        TEXT    NOT NULL,
    generation    BIGINT  NOT NULL,
    holder        TEXT    NOT NULL,
    acquired_at   BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    released      BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, branch)
);

-- The synced-but-uncommitted state of a branch: its complete file table (names, file ids,
-- durable sizes). A row set exists only while something was synced since the last commit; the
-- pending layers are the rows of `layers` with commit_id NULL and this branch.
CREATE TABLE pending_files (
    repo_id  BIGINT  NOT NULL,
    branch   TEXT    NOT NULL,
    path     TEXT    NOT NULL,
    file_id  BIGINT  NOT NULL,
    size     BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, branch, path)
);

CREATE TABLE pending (
    repo_id   BIGINT  NOT NULL,
    branch    TEXT    NOT NULL,
    next_seq  BIGINT  NOT NULL,
    synced_at BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, branch)
);

-- Readers (read-only mounts) pin the commit they serve; a pin whose heartbeat stopped is ignored.
CREATE TABLE pins (
    id            TEXT    PRIMARY KEY,
    repo_id       BIGINT  NOT NULL,
    commit_id     TEXT    NOT NULL,
    holder        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL
);
