-- Rights versions (acl.Token.Version): one sequence for the whole store, so
-- that the versions of different tokens compare. Every write that changes
-- what a token may do or who it is takes nextval in its own transaction for
-- the tokens it affects (serialised with the other such writes by an
-- advisory lock, so versions follow commit order); the deletes take one too,
-- so that RightsVersion (the sequence's last value) outranks the versions of
-- a deleted token. A sequence never hands out a value twice, even across a
-- crash.
CREATE SEQUENCE gc_rights_version AS bigint MINVALUE 1 START 1;

-- A new token gets its version from the default; existing rows each get one
-- now (a volatile default is evaluated per row when the column is added).
ALTER TABLE tokens ADD COLUMN rights_version bigint NOT NULL DEFAULT nextval('gc_rights_version');
ALTER SEQUENCE gc_rights_version OWNED BY tokens.rights_version;
