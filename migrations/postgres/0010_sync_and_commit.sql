-- A namespace change on a mount that completes a DuckDB checkpoint (the unlink of the WAL, or
-- the rename of `.wal.checkpoint` onto it) and the checkpoint commit it makes, in one call: one
-- transaction, one WAL flush of the server, where the two calls of 0009 were two. SQLite runs
-- the statements of both in one write transaction (src/catalog/sql.rs,
-- `register_and_commit_impl` of SqliteCatalog). Errors as in 0009.
CREATE FUNCTION quackfs_register_and_commit(
    p_repo         BIGINT,
    p_branch       TEXT,
    p_generation   BIGINT,
    p_now          BIGINT,
    p_ids          TEXT[],
    p_kinds        TEXT[],
    p_keys         TEXT[],
    p_sizes        BIGINT[],
    p_min_times    BIGINT[],
    p_max_times    BIGINT[],
    p_created      BIGINT[],
    p_inline       BYTEA[],
    p_paths        TEXT[],
    p_file_ids     BIGINT[],
    p_file_sizes   BIGINT[],
    p_id           TEXT,
    p_kind         TEXT,
    p_message      TEXT,
    p_author       TEXT,
    p_time         BIGINT,
    p_merge_parent TEXT,
    p_reason       TEXT,
    OUT o_seq          BIGINT,
    OUT o_parent       TEXT,
    OUT o_depth        BIGINT,
    OUT o_created_at   BIGINT,
    OUT o_bytes_added  BIGINT,
    OUT o_logical_size BIGINT
) AS $$
BEGIN
    o_seq := quackfs_register_sync(p_repo, p_branch, p_generation, p_now, p_ids, p_kinds, p_keys,
        p_sizes, p_min_times, p_max_times, p_created, p_inline, p_paths, p_file_ids, p_file_sizes);
    SELECT c.o_parent, c.o_depth, c.o_created_at, c.o_bytes_added, c.o_logical_size
        INTO o_parent, o_depth, o_created_at, o_bytes_added, o_logical_size
        FROM quackfs_commit_pending(p_repo, p_branch, p_id, p_kind, p_message, p_author, p_time,
            p_merge_parent, FALSE, p_reason) AS c;
END;
$$ LANGUAGE plpgsql;
