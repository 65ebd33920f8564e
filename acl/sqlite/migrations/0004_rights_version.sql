-- Rights versions (acl.Token.Version): one counter for the whole store, so
-- that the versions of different tokens compare. Every write that changes
-- what a token may do or who it is increments it in its own transaction and
-- gives the tokens it affects the new value; the deletes increment it too,
-- so that RightsVersion outranks the versions of a deleted token. One row,
-- always: its value is the last version handed out.
CREATE TABLE rights_version (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;

-- Every write sets the column; the default only fills existing rows, which
-- then get their ID: distinct, at least 1, at most the counter.
ALTER TABLE tokens ADD COLUMN rights_version INTEGER NOT NULL DEFAULT 0 CHECK (rights_version >= 0);
UPDATE tokens SET rights_version = id;
INSERT INTO rights_version (id, value) SELECT 1, coalesce(max(id), 0) FROM tokens;
