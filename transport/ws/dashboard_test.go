package ws

import (
	"fmt"
	"strings"
)

// dashboardData is a realistic dashboard event's data: a 2-4 KB JSON
// object of a host's metrics and its services, in which one field (the
// sequence number seq) changes from one event to the next.
func dashboardData(seq int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"host":"web-17.eu-west-1.internal","region":"eu-west-1","zone":"eu-west-1b","seq":%d,`, seq)
	b.WriteString(`"cpu":{"user":23.4,"system":6.1,"iowait":0.3,"steal":0.0,"cores":16},`)
	b.WriteString(`"memory":{"total_mb":65536,"used_mb":41210,"cached_mb":12004,"swap_mb":0},`)
	b.WriteString(`"services":[`)
	names := []string{"api", "auth", "billing", "catalog", "checkout", "search", "images", "mailer", "queue", "reports", "sessions", "ws-gateway",
		"pricing", "inventory", "shipping", "recommendations", "notifications", "audit", "feature-flags", "geo"}
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":%q,"status":"ok","version":"2.%d.%d","p50_ms":%d,"p99_ms":%d,"rps":%d,"errors_per_min":%d,"instances":%d}`,
			n, 14+i%3, i*7%10, 8+i*3, 90+i*17, 1200-i*73, i%4, 3+i%5)
	}
	b.WriteString(`],"alerts":[{"id":"disk-usage","severity":"warning","message":"/var/lib at 81% on web-17"}],"updated_by":"collector-3"}`)
	return []byte(b.String())
}
