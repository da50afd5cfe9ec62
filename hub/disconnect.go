package hub

import "errors"

// Disconnect is why a client ended, and the one table of what each reason
// means to the outside: the WebSocket close code and reason a connection is
// closed with, and the label under which Stats.Disconnects (and the
// herald_disconnects_total metric) counts it. An SSE stream has no close
// code; it just ends.
//
// A *Disconnect is an error: a client fails with one (Client.Fail, or the
// hub's own failures) and the client's writer gives it to the transport
// (End.Closed, see Client.Serve), which reads it with DisconnectOf. The
// values below are compared by identity (errors.Is); Refused makes one for
// each refused credential. A Disconnect is never modified, so it is safe for
// concurrent use.
type Disconnect struct {
	Code   uint16 // the WebSocket close code (RFC 6455 section 7.4; 4000–4999 are the protocol's own)
	Reason string // the close frame's reason, and the error's text
	Label  string // the counts' label: one of a few fixed values, fit for a metric
	cause  error  // what Refused was given, for errors.Is
}

// Error returns the reason.
func (d *Disconnect) Error() string { return d.Reason }

// Unwrap returns the cause of a Disconnect made by Refused, else nil.
func (d *Disconnect) Unwrap() error { return d.cause }

// Why the hub or a transport ends a client.
var (
	// ErrSlowConsumer: the client's outbound queue overflowed, a replay could
	// not make progress, or its transport's write deadline passed.
	ErrSlowConsumer = &Disconnect{Code: 4008, Reason: "slow consumer", Label: "slow_consumer"}
	// ErrGoingAway: the hub is shutting down.
	ErrGoingAway = &Disconnect{Code: 1001, Reason: "server going away", Label: "shutdown"}
	// ErrUnavailable: the broker cannot be reached (see also Unavailable
	// in broker.go). A client closed with it could not be served a replay.
	ErrUnavailable = &Disconnect{Code: 1013, Reason: "broker unavailable", Label: "error"}
	// ErrEpochChanged: the broker's log was replaced (a Redis that lost
	// its data, a recreated stream). Every client is closed with it; they
	// reconnect with their cursors, which then get a reset.
	ErrEpochChanged = &Disconnect{Code: 1012, Reason: "event log replaced; reconnect", Label: "log_replaced"}
	// ErrDisconnected: the control API disconnected the client
	// (Hub.Control, ControlDisconnect).
	ErrDisconnected = &Disconnect{Code: 4001, Reason: "disconnected", Label: "disconnected"}

	// DisconnectClosed: the connection ended without the hub failing the
	// client: the peer left, or the transport closed it (ErrClosed).
	DisconnectClosed = &Disconnect{Code: 1001, Reason: "server going away", Label: "closed"}
	// DisconnectError: anything else a client failed with.
	DisconnectError = &Disconnect{Code: 1001, Reason: "server going away", Label: "error"}
)

// Refused returns the Disconnect of a client whose credentials were refused
// or have expired: close 1008 (policy violation) with reason, counted as
// "unauthorized". It wraps cause, so errors.Is finds the credentials'
// error in it.
func Refused(reason string, cause error) *Disconnect {
	return &Disconnect{Code: 1008, Reason: reason, Label: "unauthorized", cause: cause}
}

// DisconnectOf returns the Disconnect that err is or wraps: DisconnectClosed
// for nil and ErrClosed, DisconnectError for an error that wraps none.
func DisconnectOf(err error) *Disconnect {
	var d *Disconnect
	switch {
	case err == nil, errors.Is(err, ErrClosed):
		return DisconnectClosed
	case errors.As(err, &d):
		return d
	}
	return DisconnectError
}

// Unchecked returns the Disconnect of a client whose credentials could not
// be checked (what checks them is out of reach): close 1013 (try again
// later) with reason, counted as "error". Clients retry a 1013, where they
// take a 1008 at the handshake as final. It wraps cause.
func Unchecked(reason string, cause error) *Disconnect {
	return &Disconnect{Code: 1013, Reason: reason, Label: "error", cause: cause}
}
