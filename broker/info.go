package broker

import "time"

// ConnectionInfo describes one live session for the admin API.
type ConnectionInfo struct {
	ID            uint64    `json:"id"`
	TokenID       int64     `json:"token_id"`
	RemoteAddr    string    `json:"remote_addr"`
	Protocol      string    `json:"protocol"`
	ClientID      string    `json:"client_id,omitempty"`
	Username      string    `json:"username,omitempty"`
	Subscriptions []string  `json:"subscriptions"`
	ConnectedAt   time.Time `json:"connected_since"`
}

// Close codes sent by the broker (the seed's 4001–4004 plus Gatecast's own).
const (
	CloseBadRequest   = 4001 // missing Authorization or Tag
	CloseTokenChanged = 4002 // token deleted, disabled or rotated while connected
	CloseForbidden    = 4003 // invalid token, or a subscription not (or no longer) granted
	CloseLimit        = 4004 // max_connections reached
	CloseKicked       = 4005 // closed by an administrator
	// CloseUnavailable: a dependency the admission needs (the store, the
	// cluster's connection leases) did not answer; the client may retry.
	CloseUnavailable = 1011
	// CloseTryAgain: the node cannot vouch for rights right now (cluster
	// mode, its link to Redis is gone); connect to another node or retry.
	CloseTryAgain = 1013
)
