-- A token whose imported secret is weak (acl.IsWeakSecret) is flagged so
-- that an operator rotates it; a rotation clears the flag.
ALTER TABLE tokens ADD COLUMN weak_secret boolean NOT NULL DEFAULT false;

-- CountWeakSecrets (the gatecast_tokens_weak_secret gauge) reads only the
-- flagged rows.
CREATE INDEX tokens_weak_secret ON tokens (id) WHERE weak_secret;

-- Where imported tokens came from. No foreign key: a record outlives its
-- token, so that an import does not re-create a token deleted or rotated
-- since (token IDs are never reused).
CREATE TABLE token_origins (
	source      text        NOT NULL,
	source_id   bigint      NOT NULL CHECK (source_id > 0),
	token_id    bigint      NOT NULL,
	imported_at timestamptz NOT NULL,
	CONSTRAINT token_origins_pkey PRIMARY KEY (source, source_id)
);

-- The audit log of admin writes, from every node. It never holds a secret,
-- a secret's hash or the admin key. The identity column only grows, so IDs
-- page the log.
CREATE TABLE audit_log (
	id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at          timestamptz NOT NULL,
	actor       text        NOT NULL,
	source      text        NOT NULL,
	client      text        NOT NULL,
	remote      text        NOT NULL,
	node        text        NOT NULL,
	action      text        NOT NULL,
	token_id    bigint, -- NULL: none
	tag_id      bigint, -- NULL: none
	target      text        NOT NULL,
	status      integer     NOT NULL,
	enforcement text        NOT NULL,
	detail      text        NOT NULL
);

CREATE INDEX audit_by_token ON audit_log (token_id, id) WHERE token_id IS NOT NULL;
CREATE INDEX audit_by_tag ON audit_log (tag_id, id) WHERE tag_id IS NOT NULL;
CREATE INDEX audit_by_action ON audit_log (action, id);
