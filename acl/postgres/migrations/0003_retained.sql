-- MQTT retained messages (acl.RetainedStore): the last message published
-- with the retain flag on each topic, written in the background by the MQTT
-- adapter of every node so that it survives a restart. An empty payload
-- clears a topic, so a stored payload is never empty.
CREATE TABLE retained (
	topic      text        CONSTRAINT retained_pkey PRIMARY KEY,
	payload    bytea       NOT NULL CHECK (octet_length(payload) > 0),
	props      bytea, -- MQTT 5 properties, wire form; NULL: none
	qos        smallint    NOT NULL CHECK (qos BETWEEN 0 AND 2),
	expires_at timestamptz -- millisecond precision; NULL: never
);
