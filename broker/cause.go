package broker

import "fmt"

// Cause says, in protocol-neutral terms, why the core refused or ended a
// session. Each protocol adapter maps it to its own answer: the seed
// protocol to a close code (SeedCode), MQTT to a CONNACK or DISCONNECT
// reason code.
type Cause uint8

const (
	CauseNone Cause = iota
	// CauseBadRequest: the request lacks what the protocol requires (seed:
	// no Authorization or Tag header).
	CauseBadRequest
	// CauseBadCredentials: the secret is missing, unknown, disabled or
	// rotated, at connect time.
	CauseBadCredentials
	// CauseNotAuthorized: a subscription is not, or no longer, covered by
	// a grant.
	CauseNotAuthorized
	// CauseInvalid: a requested subscription is malformed or over a cap.
	CauseInvalid
	// CauseTokenChanged: the token was deleted, disabled or rotated while
	// the session was live.
	CauseTokenChanged
	// CauseLimit: the token's max_connections is reached (at connect) or
	// was lowered below the open sessions (live).
	CauseLimit
	// CauseKicked: an administrator closed the session.
	CauseKicked
	// CauseUnavailable: a dependency (the store, cluster leases or routes)
	// did not answer; the client may retry.
	CauseUnavailable
	// CauseTryAgain: the node cannot vouch for rights right now (cluster
	// mode, Redis lost); the client may retry or use another node.
	CauseTryAgain
	// CauseTakenOver: a newer connection took the session over (MQTT
	// client identifiers).
	CauseTakenOver
	// CauseShutdown: the node is shutting down.
	CauseShutdown
	numCauses
)

var causeNames = [numCauses]string{"none", "bad_request", "bad_credentials", "not_authorized", "invalid",
	"token_changed", "limit", "kicked", "unavailable", "try_again", "taken_over", "shutdown"}

func (c Cause) String() string {
	if c < numCauses {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// seedCodes maps causes to the seed protocol's close codes.
var seedCodes = [numCauses]uint16{
	CauseBadRequest:     CloseBadRequest,
	CauseBadCredentials: CloseForbidden,
	CauseNotAuthorized:  CloseForbidden,
	CauseInvalid:        CloseForbidden,
	CauseTokenChanged:   CloseTokenChanged,
	CauseLimit:          CloseLimit,
	CauseKicked:         CloseKicked,
	CauseUnavailable:    CloseUnavailable,
	CauseTryAgain:       CloseTryAgain,
	CauseTakenOver:      CloseTryAgain,
	CauseShutdown:       1001, // going away
}

// SeedCode is the seed protocol's close code for c.
func (c Cause) SeedCode() uint16 {
	if c < numCauses && seedCodes[c] != 0 {
		return seedCodes[c]
	}
	return 1011
}

// Rejection says why a connection was refused: the neutral cause, the seed
// close code for it, and a short reason for the client.
type Rejection struct {
	Cause  Cause
	Code   uint16 // Cause.SeedCode()
	Reason string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("rejected %d (%s): %s", r.Code, r.Cause, r.Reason)
}

func reject(c Cause, reason string) *Rejection {
	return &Rejection{Cause: c, Code: c.SeedCode(), Reason: reason}
}

// SafeReason makes s a valid reason for any protocol: valid UTF-8, printable,
// at most 123 bytes (a WebSocket close frame's room), cut between whole
// characters. It returns s itself, without allocating, when it is fine.
func SafeReason(s string) string { return closeReason(s) }
