// Package client is the Go client of Herald: it subscribes to topics over
// WebSocket or SSE and publishes events and runs actions over the HTTP API.
//
// A [Client] is made by [Dial] and released by [Client.Close]:
//
//	c, err := client.Dial(ctx, "http://127.0.0.1:8080", nil)
//	if err != nil { … }
//	defer c.Close()
//	sub, err := c.Subscribe(ctx, []string{"orders.*"}, nil)
//	if err != nil { … }
//	for m, err := range sub.All() {
//		if err != nil { … } // the subscription ended for good
//		if m.Kind == client.KindEvent { fmt.Println(m.Event.Topic, string(m.Event.Data)) }
//	}
//
// # Subscriptions
//
// Every subscription has a connection of its own (a WebSocket, or an SSE
// stream with Options.Transport "sse"). The protocol makes a connection's
// cursor, its rewind, its state and its delta and conflation settings
// properties of the connection: a resume ("since") on a connection that
// has delivered events starts from the later of the two cursors, and
// conflation delays every event of the connection. Subscriptions sharing a
// connection could therefore neither resume independently nor keep their
// own options, so they do not share one.
//
// A subscription delivers [Message] values: events, and the server's
// resets and synced markers, which are values and not errors. When its
// connection breaks, it reconnects with exponential backoff and jitter and
// resumes from the last cursor it delivered, so that its consumer sees
// every event once, in order, across reconnects; an event it missed for
// good (history gone, another epoch of the log) is announced by a reset.
// A refusal by the server (400, 401, 403, 404, 501) ends it with an
// [*Error].
//
// A subscription resumes from a cursor, which it has from the start: the
// server confirms a subscription without one with the position it started
// at (the WebSocket ok's "id", the SSE stream's first block of only an
// "id:"), so events published while the connection is down before its
// first event are delivered too. Over SSE, Subscribe returns once that
// block has arrived. A State subscription gets no start: its cursor comes
// with the state, and cut off before any of it, it asks for the state
// again.
//
// # Publishing and actions
//
// [Client.Publish], [Client.PublishBatch] and [Client.Action] use the HTTP
// API whatever the transport: they do not depend on a subscription being
// connected. [ActionHandle.Wait] takes an action's result from its result
// event (the handle subscribes to the action's topic before submitting it)
// and falls back to the action's status document when the event could
// have been missed.
//
// # Credentials
//
// Options.Token, or Options.TokenFunc called for every connection and
// request, goes in "Authorization: Bearer"; Options.APIKey in "X-API-Key".
// A WebSocket subscription with a TokenFunc sends the server a fresh token
// (op "refresh") before the current one expires; an SSE stream ends when
// its token expires and is resumed with a fresh one.
//
// # Bounds
//
// A broken or hostile server can make a subscription neither hang nor
// hold unbounded memory. A connection attempt that the server has not
// confirmed (the WebSocket's ok, the SSE response's headers) within
// Options.ConnectTimeout (30 s) fails, and a connection that receives
// nothing, not even the server's keep-alives, for Options.IdleTimeout
// (75 s) is dropped: the subscription reconnects and resumes from its
// cursor. A WebSocket subscription pings the server after half the idle
// timeout in silence; over SSE the idle timeout must exceed the server's
// heartbeat interval (15 s by default). A consumer that holds up the
// reader does not make its connection idle. The client follows no
// redirect (Herald makes none): a 3xx is an error. An event is at most
// Options.MaxMessage bytes (1 MiB), as is the data a delta makes, and its
// data, if on several lines, must be valid JSON (Event.AppendJSON writes
// one line). State and Presence read answers of at most
// 64 MiB, and at most 1,048,576 events or members. An error answer's
// message is cut to 1 KiB.
//
// # Concurrency
//
// A Client and its Subscriptions and ActionHandles are safe for concurrent
// use. Every goroutine the package starts ends with the subscription that
// owns it (its context, its Close, or a permanent error), and Client.Close
// ends them all before it returns.
package client
