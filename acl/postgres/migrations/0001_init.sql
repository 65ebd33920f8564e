-- Tokens are stored by the SHA-256 of their secret, never the secret.
-- An identity column draws from a sequence that never hands out a value
-- twice, so IDs are not reused after a delete and a cache keyed by ID can
-- never confuse a new token with a deleted one.
CREATE TABLE tokens (
	id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name            text        NOT NULL DEFAULT '',
	hash            bytea       NOT NULL CONSTRAINT tokens_hash_key UNIQUE
	                            CHECK (octet_length(hash) = 32),
	max_connections bigint      NOT NULL DEFAULT 0 CHECK (max_connections >= 0),
	disabled        boolean     NOT NULL DEFAULT false,
	created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tags (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	pattern text   NOT NULL CONSTRAINT tags_pattern_key UNIQUE
);

-- The foreign keys are named so that a violation tells which of the two
-- rows is missing (the store maps it to acl.ErrNotFound).
CREATE TABLE permissions (
	token_id   bigint NOT NULL
	           CONSTRAINT permissions_token_fk REFERENCES tokens (id) ON DELETE CASCADE,
	tag_id     bigint NOT NULL
	           CONSTRAINT permissions_tag_fk REFERENCES tags (id) ON DELETE CASCADE,
	permission text   NOT NULL CHECK (permission IN ('read', 'readwrite')),
	PRIMARY KEY (token_id, tag_id)
);

-- TokensWithTag and the cascade from tags look permissions up by tag.
CREATE INDEX permissions_by_tag ON permissions (tag_id, token_id);
