-- A checkpoint commit adopts the pending layers of its branch with an UPDATE chosen by a
-- condition, which locks the rows in the order PostgreSQL scans them (seq order). Every other
-- call that changes several layer rows (a mount's spill naming its uploaded layers, merge,
-- compaction, gc) changes them in id order (`lock_order` in src/catalog/sql.rs), and a layer's
-- id is not in seq order: a spill of a branch's pending layers beside the commit adopting them
-- could each hold a row the other waits for, and PostgreSQL aborts one with "deadlock
-- detected". The commit now locks the rows it adopts in id order first. Same function as 0009
-- otherwise; quackfs_register_and_commit (0010) calls it and so gets the same order.
CREATE OR REPLACE FUNCTION quackfs_commit_pending(
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
    -- Lock the adopted rows in id order before changing them (see the header).
    PERFORM 1 FROM layers
        WHERE repo_id = p_repo AND branch = p_branch AND commit_id IS NULL ORDER BY id FOR UPDATE;
    UPDATE layers SET commit_id = p_id, branch = NULL
        WHERE repo_id = p_repo AND branch = p_branch AND commit_id IS NULL;
    DELETE FROM pending_files WHERE repo_id = p_repo AND branch = p_branch;
    DELETE FROM pending WHERE repo_id = p_repo AND branch = p_branch;
    INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason)
        VALUES (p_repo, p_branch, v_head, p_id, o_created_at, p_reason);
END;
$$ LANGUAGE plpgsql;
