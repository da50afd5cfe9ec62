package server

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// tlsConfig loads the pair of --tls-cert and --tls-key, or returns nil
// without them. A pair that cannot be loaded is a usage error.
//
// HTTP/2 needs TLS 1.2 at least (RFC 9113 §9.2), and nothing older is safe
// any more. The rest, cipher suites and curves among them, is Go's choice,
// which follows current advice with each release.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, configErrorf("--tls-cert %s and --tls-key %s: failed to load the certificate and key: %v", c.TLSCert, c.TLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// protocols returns the HTTP versions the server speaks: HTTP/1.1 always,
// for WebSocket upgrades and plain clients; HTTP/2 over TLS, where browsers
// multiplex every SSE stream of a page over one connection instead of being
// held to six connections per origin; HTTP/2 without TLS with --h2c.
func (c *Config) protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	switch {
	case c.TLSCert != "":
		p.SetHTTP2(true)
	case c.H2C:
		p.SetUnencryptedHTTP2(true)
	}
	return &p
}

// scheme is the URL scheme of the server's address, for the log.
func (c *Config) scheme() string {
	if c.TLSCert != "" {
		return "https"
	}
	return "http"
}

// protocolNames names protocols() for the log, by their ALPN names.
func (c *Config) protocolNames() string {
	switch {
	case c.TLSCert != "":
		return "h2,http/1.1"
	case c.H2C:
		return "h2c,http/1.1"
	}
	return "http/1.1"
}

// checkHTTP2 refuses to serve HTTP/2 when godebug, the GODEBUG environment
// variable, turns on extended CONNECT (RFC 8441) with http2xconnect=1.
//
// Go's HTTP/2 server then advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, and a
// browser that sees it opens its WebSockets as CONNECT streams inside the
// HTTP/2 connection instead of as HTTP/1.1 upgrades. coder/websocket accepts
// only the upgrade, as it must hijack an HTTP/1.1 connection, so every
// browser WebSocket would fail. Go leaves the setting off by default for that
// very reason (Go issue 71128); net/http reads GODEBUG once at start with
// this same substring test, so the check sees what the server will do.
func (c *Config) checkHTTP2(godebug string) error {
	if (c.TLSCert != "" || c.H2C) && strings.Contains(godebug, "http2xconnect=1") {
		return configErrorf("GODEBUG=http2xconnect=1 makes browsers open WebSockets over HTTP/2, " +
			"which Herald cannot accept: remove it from GODEBUG")
	}
	return nil
}
