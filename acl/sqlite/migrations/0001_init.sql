-- Tokens are stored by the SHA-256 of their secret, never the secret.
-- AUTOINCREMENT keeps IDs from being reused after a delete, so a cache keyed
-- by ID can never confuse a new token with a deleted one.
CREATE TABLE tokens (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	name            TEXT    NOT NULL DEFAULT '',
	hash            BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
	max_connections INTEGER NOT NULL DEFAULT 0 CHECK (max_connections >= 0),
	disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
	created_at      INTEGER NOT NULL -- Unix microseconds, UTC
) STRICT;

CREATE TABLE tags (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	pattern TEXT    NOT NULL UNIQUE
) STRICT;

CREATE TABLE permissions (
	token_id   INTEGER NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
	tag_id     INTEGER NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
	permission TEXT    NOT NULL CHECK (permission IN ('read', 'readwrite')),
	PRIMARY KEY (token_id, tag_id)
) STRICT, WITHOUT ROWID;

-- TokensWithTag and the cascade from tags look permissions up by tag.
CREATE INDEX permissions_by_tag ON permissions (tag_id, token_id);
