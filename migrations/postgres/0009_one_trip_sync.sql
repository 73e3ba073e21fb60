-- The two catalog transactions on a mount's commit path, each as one function: a call is one
-- round trip to the server where the same statements sent one by one took 9 (a sync) and 14 (a
-- checkpoint commit), and a DuckDB commit on a distant PostgreSQL paid each of them. SQLite (no
-- round trips) runs the same steps as statements (src/catalog/sql.rs, `register_sync_impl` and
-- `commit_pending_impl` of SqliteCatalog); the catalog suite checks both give the same results.
--
-- Errors carry SQLSTATEs of class QF, mapped back to CatalogError by the caller:
--   QF001 fenced (the lease moved on or was released), QF002 branch or commit not found,
--   QF003 nothing pending, QF004 the branch moved (compare-and-swap failed), QF005 the branch
--   points at a commit the catalog does not have.

-- Registers syncs: the new layers of a branch, in order (seq assigned from the branch's next_seq),
-- inline objects (element NULL: stored in the object store) and the complete pending file table.
-- Returns the seq of the first new layer.
CREATE FUNCTION quackfs_register_sync(
    p_repo       BIGINT,
    p_branch     TEXT,
    p_generation BIGINT,
    p_now        BIGINT,
    p_ids        TEXT[],
    p_kinds      TEXT[],
    p_keys       TEXT[],
    p_sizes      BIGINT[],
    p_min_times  BIGINT[],
    p_max_times  BIGINT[],
    p_created    BIGINT[],
    p_inline     BYTEA[],
    p_paths      TEXT[],
    p_file_ids   BIGINT[],
    p_file_sizes BIGINT[]
) RETURNS BIGINT AS $$
DECLARE
    v_generation BIGINT;
    v_released   BIGINT;
    v_seq        BIGINT;
BEGIN
    -- Serialise with commits and moves of the branch.
    PERFORM 1 FROM refs WHERE repo_id = p_repo AND name = p_branch AND kind = 'branch' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'branch % not found', p_branch USING ERRCODE = 'QF002';
    END IF;
    SELECT l.generation, l.released, p.next_seq INTO v_generation, v_released, v_seq
        FROM leases l LEFT JOIN pending p ON p.repo_id = l.repo_id AND p.branch = l.branch
        WHERE l.repo_id = p_repo AND l.branch = p_branch;
    IF NOT FOUND OR v_generation <> p_generation OR v_released <> 0 THEN
        RAISE EXCEPTION 'branch % is fenced', p_branch USING ERRCODE = 'QF001';
    END IF;
    v_seq := COALESCE(v_seq, 0);
    INSERT INTO pending (repo_id, branch, next_seq, synced_at)
        VALUES (p_repo, p_branch, v_seq + COALESCE(cardinality(p_ids), 0), p_now)
        ON CONFLICT (repo_id, branch) DO UPDATE SET next_seq = EXCLUDED.next_seq, synced_at = EXCLUDED.synced_at;
    INSERT INTO inline_objects (id, repo_id, bytes, created_at)
        SELECT t.id, p_repo, t.bytes, p_now FROM unnest(p_ids, p_inline) AS t(id, bytes)
        WHERE t.bytes IS NOT NULL;
    INSERT INTO layers (id, repo_id, commit_id, branch, seq, kind, object_key, size_bytes, min_time, max_time, created_at)
        SELECT t.id, p_repo, NULL, p_branch, v_seq + t.ord - 1, t.kind, t.key, t.size, t.min_time, t.max_time, t.created
        FROM unnest(p_ids, p_kinds, p_keys, p_sizes, p_min_times, p_max_times, p_created)
            WITH ORDINALITY AS t(id, kind, key, size, min_time, max_time, created, ord);
    DELETE FROM pending_files WHERE repo_id = p_repo AND branch = p_branch;
    INSERT INTO pending_files (repo_id, branch, path, file_id, size)
        SELECT p_repo, p_branch, f.path, f.file_id, f.size
        FROM unnest(p_paths, p_file_ids, p_file_sizes) AS f(path, file_id, size);
    RETURN v_seq;
END;
$$ LANGUAGE plpgsql;

-- Seals the pending state of a branch into commit p_id on top of its head: the pending layers
-- and file table are adopted (with no pending state and p_allow_empty, the head's files are
-- kept), the branch moves, the reflog records it. Returns what the server decided.
CREATE FUNCTION quackfs_commit_pending(
    p_repo         BIGINT,
    p_branch       TEXT,
    p_id           TEXT,
    p_kind         TEXT,
    p_message      TEXT,
    p_author       TEXT,
    p_time         BIGINT,
    p_merge_parent TEXT,
    p_allow_empty  BOOLEAN,
    p_reason       TEXT,
    OUT o_parent       TEXT,
    OUT o_depth        BIGINT,
    OUT o_created_at   BIGINT,
    OUT o_bytes_added  BIGINT,
    OUT o_logical_size BIGINT
) AS $$
DECLARE
    v_head    TEXT;
    v_parent  commits%ROWTYPE;
    v_pending BOOLEAN;
BEGIN
    SELECT commit_id INTO v_head FROM refs
        WHERE repo_id = p_repo AND name = p_branch AND kind = 'branch' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'branch % not found', p_branch USING ERRCODE = 'QF002';
    END IF;
    SELECT * INTO v_parent FROM commits WHERE id = v_head;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'branch % points at commit %, which is not in the catalog', p_branch, v_head
            USING ERRCODE = 'QF005';
    END IF;
    v_pending := EXISTS (SELECT 1 FROM pending WHERE repo_id = p_repo AND branch = p_branch);
    IF NOT v_pending AND NOT p_allow_empty THEN
        RAISE EXCEPTION 'nothing pending on %', p_branch USING ERRCODE = 'QF003';
    END IF;
    -- Commit times are monotonic along a branch even if the clock steps back.
    o_created_at := GREATEST(p_time, v_parent.created_at + 1);
    UPDATE refs SET commit_id = p_id, updated_at = o_created_at
        WHERE repo_id = p_repo AND name = p_branch AND kind = 'branch' AND commit_id = v_head;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'branch % moved', p_branch USING ERRCODE = 'QF004';
    END IF;
    SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) INTO o_bytes_added FROM layers
        WHERE repo_id = p_repo AND branch = p_branch AND commit_id IS NULL AND superseded_at IS NULL;
    o_parent := v_head;
    o_depth := v_parent.depth + 1;
    IF v_pending THEN
        SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) INTO o_logical_size FROM pending_files
            WHERE repo_id = p_repo AND branch = p_branch;
    ELSE
        SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) INTO o_logical_size FROM commit_files
            WHERE commit_id = v_head;
    END IF;
    INSERT INTO commits (id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size, merge_parent_id)
        VALUES (p_id, p_repo, v_head, o_depth, p_kind, p_message, p_author, o_created_at, o_bytes_added, o_logical_size, p_merge_parent);
    IF v_pending THEN
        INSERT INTO commit_files (commit_id, path, file_id, size)
            SELECT p_id, path, file_id, size FROM pending_files WHERE repo_id = p_repo AND branch = p_branch;
    ELSE
        INSERT INTO commit_files (commit_id, path, file_id, size)
            SELECT p_id, path, file_id, size FROM commit_files WHERE commit_id = v_head;
    END IF;
    UPDATE layers SET commit_id = p_id, branch = NULL
        WHERE repo_id = p_repo AND branch = p_branch AND commit_id IS NULL;
    DELETE FROM pending_files WHERE repo_id = p_repo AND branch = p_branch;
    DELETE FROM pending WHERE repo_id = p_repo AND branch = p_branch;
    INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason)
        VALUES (p_repo, p_branch, v_head, p_id, o_created_at, p_reason);
END;
$$ LANGUAGE plpgsql;
