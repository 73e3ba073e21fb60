-- A commit made by `quackfs apply` (a three-way merge by rows) has two parents: parent_id, the
-- branch it was made on (first parent), and merge_parent_id, the head of the source it brought
-- in (`REV^2`). NULL for every other commit.
ALTER TABLE commits ADD COLUMN merge_parent_id TEXT;
