package sse

import "time"

// SetParkAfter shortens how long h's writers wait before they park.
func SetParkAfter(h *Handler, d time.Duration) { h.conn.ParkAfter = d }
