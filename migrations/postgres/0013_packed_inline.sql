-- Inline objects may be kept compressed: `inline_objects.bytes` holds either the layer object
-- (it ends with its trailer's magic, QFSLAYR1) or its LZ4-compressed copy, followed by the
-- object's length (u32), its crc32c (u32) and the magic QFSINLZ1 (src/engine/inline.rs, `pack`).
-- No row changes. The migration is what makes an older quackfs, which would take a compressed
-- copy for a damaged layer object (and its gc would store it as the layer object), refuse this
-- catalog: sqlx refuses a catalog with a migration it does not know.
COMMENT ON COLUMN inline_objects.bytes IS
    'a layer object, or its LZ4-compressed copy ending with QFSINLZ1 (src/engine/inline.rs, pack)';
