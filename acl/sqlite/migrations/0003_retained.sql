-- MQTT retained messages (acl.RetainedStore): the last message published
-- with the retain flag on each topic, written in the background by the MQTT
-- adapter so that it survives a restart. An empty payload clears a topic,
-- so a stored payload is never empty. A rowid table, not WITHOUT ROWID:
-- rows can be as large as a packet.
CREATE TABLE retained (
	topic      TEXT    PRIMARY KEY,
	payload    BLOB    NOT NULL CHECK (length(payload) > 0),
	props      BLOB, -- MQTT 5 properties, wire form; NULL: none
	qos        INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
	expires_at INTEGER -- Unix milliseconds, UTC; NULL: never
) STRICT;
