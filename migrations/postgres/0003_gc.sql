-- merge and gc: a layer replaced by merge is superseded (readers that started before keep using
-- it); a layer nothing needs is doomed (its object is deleted once the grace period has passed);
-- a commit outside the retention window that nothing keeps readable is expired.
ALTER TABLE layers ADD COLUMN superseded_at BIGINT;
ALTER TABLE layers ADD COLUMN doomed_at BIGINT;
ALTER TABLE commits ADD COLUMN expired_at BIGINT;
