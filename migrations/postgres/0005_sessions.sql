-- Sessions: every process that reads or writes layers while it runs (a mount, read-only or
-- writable; import; merge; gc) has a row, renewed by a heartbeat (the catalog server's clock),
-- and registers the layers it resolved. gc keeps every layer a live session registered, never
-- deletes an unregistered object whose layer id starts with a live session's id (an upload in
-- flight), and keeps the commit a read-only mount serves (commit_id) readable. They replace the
-- pins of read-only mounts (table pins is no longer used). See docs/merge-and-gc.md.
CREATE TABLE sessions (
    id            TEXT    PRIMARY KEY,
    repo_id       BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,
    holder        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    commit_id     TEXT
);

CREATE TABLE session_layers (
    session_id  TEXT  NOT NULL,
    layer_id    TEXT  NOT NULL,
    PRIMARY KEY (session_id, layer_id)
);
CREATE INDEX session_layers_by_layer ON session_layers (layer_id);
