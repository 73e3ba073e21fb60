-- (PostgreSQL notifies followers when a ref moves; SQLite has no notifications: followers of an
-- embedded catalog poll. Kept so both backends share migration numbers.)
SELECT 1;
