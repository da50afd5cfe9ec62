package ws

import "time"

// SetParkAfter shortens how long h's writers wait before they park.
func SetParkAfter(h *Handler, d time.Duration) { h.writer.ParkAfter = d }

// DashboardData is a realistic dashboard event's data (dashboard_test.go).
var DashboardData = dashboardData
