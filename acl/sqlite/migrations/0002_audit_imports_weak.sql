-- A token whose imported secret is weak (acl.IsWeakSecret) is flagged so
-- that an operator rotates it; a rotation clears the flag.
ALTER TABLE tokens ADD COLUMN weak_secret INTEGER NOT NULL DEFAULT 0 CHECK (weak_secret IN (0, 1));

-- CountWeakSecrets (the gatecast_tokens_weak_secret gauge) reads only the
-- flagged rows.
CREATE INDEX tokens_weak_secret ON tokens (id) WHERE weak_secret = 1;

-- Where imported tokens came from. No foreign key: a record outlives its
-- token, so that an import does not re-create a token deleted or rotated
-- since (token IDs are never reused).
CREATE TABLE token_origins (
	source      TEXT    NOT NULL,
	source_id   INTEGER NOT NULL CHECK (source_id > 0),
	token_id    INTEGER NOT NULL,
	imported_at INTEGER NOT NULL, -- Unix microseconds, UTC
	PRIMARY KEY (source, source_id)
) STRICT, WITHOUT ROWID;

-- The audit log of admin writes. It never holds a secret, a secret's hash
-- or the admin key. AUTOINCREMENT: IDs only grow, so they page the log.
CREATE TABLE audit_log (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	at          INTEGER NOT NULL, -- Unix microseconds, UTC
	actor       TEXT    NOT NULL,
	source      TEXT    NOT NULL,
	client      TEXT    NOT NULL,
	remote      TEXT    NOT NULL,
	node        TEXT    NOT NULL,
	action      TEXT    NOT NULL,
	token_id    INTEGER, -- NULL: none
	tag_id      INTEGER, -- NULL: none
	target      TEXT    NOT NULL,
	status      INTEGER NOT NULL,
	enforcement TEXT    NOT NULL,
	detail      TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_by_token ON audit_log (token_id, id) WHERE token_id IS NOT NULL;
CREATE INDEX audit_by_tag ON audit_log (tag_id, id) WHERE tag_id IS NOT NULL;
CREATE INDEX audit_by_action ON audit_log (action, id);
