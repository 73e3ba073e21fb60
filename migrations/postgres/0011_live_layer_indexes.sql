-- Indexes that find live layers without walking the superseded ones. A mount's compaction
-- supersedes its small pending layers, and they stay in the catalog until gc (readers that
-- resolved them still read them): tens of thousands on a branch whose DuckDB commits are single
-- rows, where a live pending layer is one in 32.
--
-- The pending layers of a branch that are not superseded (what a mount's compaction, a commit's
-- size and `pending` read): the same index as before with superseded_at before seq, so
-- `superseded_at IS NULL` is a range of it, still in seq order.
DROP INDEX layers_pending;
CREATE INDEX layers_pending ON layers (repo_id, branch, superseded_at, seq);
-- The background spill moves into the store only inline objects whose layer is live: a layer
-- superseded by a compaction (or marked by gc) goes with its catalog row when gc deletes it, so
-- storing it first was wasted work (on the embedded default a file and two fsyncs per DuckDB
-- commit, on S3 a PUT). The spill finds them oldest first through this index, which holds only
-- them, instead of scanning every inline object by age.
DROP INDEX inline_objects_by_age;
CREATE INDEX layers_inline_live ON layers (created_at)
    WHERE object_key LIKE 'inline/%' AND superseded_at IS NULL AND doomed_at IS NULL;
