// Package server runs a whole Herald node: the hub and its broker, the
// action service, the SSE, WebSocket and HTTP API transports, the limits,
// the metrics and the internal listener, wired as "herald serve" wires
// them. A Go program embeds Herald with New, Serve and Shutdown, and may
// run actions with its own handlers (Config.ActionHandlers).
//
// # Shutdown order
//
// Shutdown stops the node in the order that lets every connection end
// cleanly, and returns within its context even if something hangs:
//
//  1. The hub's Shutdown fails every hub client with ErrGoingAway, so SSE
//     streams end (http.Server.Shutdown would otherwise wait for them
//     forever) and WebSocket connections close with 1001. Publishing still
//     works.
//  2. http.Server.Shutdown closes the listener and lets in-flight requests
//     (publishes among them) finish. SSE streams over HTTP/2 are such
//     requests, as HTTP/2 cannot be hijacked: they have ended in step 1,
//     and each HTTP/2 connection gets a GOAWAY and closes.
//  3. The SSE and WebSocket handlers' Wait waits for the hijacked SSE
//     streams and WebSocket connections (HTTP/1.1, with or without TLS),
//     which http.Server does not track.
//  4. The action service's Shutdown refuses new actions (nothing can submit
//     one any more) and lets the running ones finish and publish their
//     results, which needs the hub still open. With the memory broker the
//     queued actions, and those still running when the context ends, fail
//     with code "shutdown"; with a shared broker they stay in its store
//     for another node (action.Service).
//  5. The hub's Close stops its goroutines and the broker; then the
//     internal listener, the broker's connections and the upstreams' idle
//     connections are released.
//
// When the context ends first, http.Server.Close cuts every remaining
// connection.
package server
