package bench

// Bytes on the wire (Report.WireBytesPerEvent and the fields beside it):
// for each WebSocket subscriber, the kernel's count of bytes its
// connection received, read at the start of publishing and at the end of
// the run, against the events delivered on it in between and what they
// would have taken as plain frames. A subscriber whose connection changed
// in between (a chaos disconnect) is left out: the bytes of the connection
// that ended are gone with it.

// wireMark is one subscriber's connection and counts at the start.
type wireMark struct {
	conn      *wsSub // nil: not measured
	bytes     uint64
	delivered int64
	payload   int64
}

// wireTotals adds up the subscribers measured.
type wireTotals struct {
	conns     int
	bytes     int64
	delivered int64
	payload   int64
}

// wireStart marks every WebSocket subscriber's connection.
func (r *run) wireStart() {
	for _, s := range r.subs {
		s.cutMu.Lock()
		s.wire0 = wireMark{}
		if ws, ok := s.conn.(*wsSub); ok {
			if n, ok := tcpBytesReceived(ws.c.conn.Conn); ok {
				s.wire0 = wireMark{conn: ws, bytes: n, delivered: s.delivered.Load(), payload: s.payload.Load()}
			}
		}
		s.cutMu.Unlock()
	}
}

// wireEnd adds up what the subscribers marked by wireStart received since,
// on the same connection. Called once every event has arrived (or the
// drain gave up), while the connections are still open.
func (r *run) wireEnd() wireTotals {
	var t wireTotals
	for _, s := range r.subs {
		s.cutMu.Lock()
		m := s.wire0
		same := m.conn != nil && s.conn == subConn(m.conn)
		s.cutMu.Unlock()
		if !same {
			continue
		}
		n, ok := tcpBytesReceived(m.conn.c.conn.Conn)
		if !ok || n < m.bytes {
			continue
		}
		t.conns++
		t.bytes += int64(n - m.bytes)
		t.delivered += s.delivered.Load() - m.delivered
		t.payload += s.payload.Load() - m.payload
	}
	return t
}

// report puts the totals into rep.
func (t wireTotals) report(rep *Report) {
	rep.WireConnections = t.conns
	rep.WireBytes = t.bytes
	rep.WireDeliveries = t.delivered
	if t.delivered > 0 {
		rep.WireBytesPerEvent = float64(t.bytes) / float64(t.delivered)
		rep.PayloadBytesPerEvent = float64(t.payload) / float64(t.delivered)
	}
	if t.payload > 0 {
		rep.CompressionRatio = float64(t.bytes) / float64(t.payload)
	}
}

// frameSize is the length of an unmasked server frame carrying n bytes.
func frameSize(n int) int64 {
	switch {
	case n < 126:
		return int64(n) + 2
	case n <= 0xffff:
		return int64(n) + 4
	default:
		return int64(n) + 10
	}
}
