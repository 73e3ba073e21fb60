-- Followers (`mount --follow`) learn at once that a branch moved: every insert or update of a
-- ref notifies channel quackfs_refs with 'REPO_ID:NAME' (delivered when the transaction commits).
CREATE FUNCTION quackfs_notify_ref() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('quackfs_refs', NEW.repo_id::text || ':' || NEW.name);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER refs_notify AFTER INSERT OR UPDATE ON refs
    FOR EACH ROW EXECUTE FUNCTION quackfs_notify_ref();
