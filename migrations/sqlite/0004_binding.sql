-- The catalog's identity and its binding to one object store (docs/operations.md, "What quackfs
-- protects you from"): `catalog_id` is written here first, then into the store's marker object
-- (quackfs-store.json); `store_bound` is set once the marker names this catalog, `store` is the
-- store it was bound to (for messages).
CREATE TABLE catalog_meta (
    key    TEXT  PRIMARY KEY,
    value  TEXT  NOT NULL
);
