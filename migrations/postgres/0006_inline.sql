-- Small layers kept in the catalog itself (docs/architecture.md, "Small syncs in the catalog"): a
-- sync whose layer object is small registers the object's bytes here, in the same transaction, so
-- a DuckDB commit costs one catalog transaction and no object-store round trip. Its layer's
-- object_key is `inline/ID`; once the bytes are stored as `layers/ID` (in the background), the
-- row goes and the key becomes `layers/ID`. Readers of `inline/ID` look here first, then there.
CREATE TABLE inline_objects (
    id          TEXT    PRIMARY KEY,
    repo_id     BIGINT  NOT NULL,
    bytes       BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX inline_objects_by_age ON inline_objects (created_at);
-- DuckDB's blocks are compressed already: store the bytes as they are (no TOAST compression).
ALTER TABLE inline_objects ALTER COLUMN bytes SET STORAGE EXTERNAL;
