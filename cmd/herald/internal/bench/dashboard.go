package bench

import (
	"strconv"
)

// The payload shapes of published events (Config.PayloadShape).
const (
	// ShapePad is {"bseq":N,"bts":T,"pad":"xxx…"} with Config.Payload
	// padding bytes: every event of a topic is as different from the last
	// as its sequence number and send time make it.
	ShapePad = "pad"
	// ShapeDashboard is what a live dashboard publishes per key (a widget,
	// a service): a JSON object of about 3.7 KB with labels, 40 metrics
	// (each {"name","value","unit","status"}) and 8 panel descriptions, of
	// which each event of a key changes one metric's value, besides bseq
	// and bts. Successive events of a key differ little, which is what
	// deltas are for; the repeated field names and labels are what
	// compression finds in such objects.
	ShapeDashboard = "dashboard"
)

// dashboardMetrics are the metrics of a dashboard object, with the kind
// of value each has (a counter that only grows, a gauge with two decimals,
// a percentage with one) and its unit.
var dashboardMetrics = []struct {
	name string
	kind byte // 'c' counter, 'g' gauge, 'p' percent
	unit string
}{
	{"http_requests_total", 'c', "req"}, {"http_requests_5xx", 'c', "req"}, {"http_request_p50_ms", 'g', "ms"},
	{"http_request_p99_ms", 'g', "ms"}, {"http_in_flight", 'c', "req"}, {"http_bytes_out", 'c', "B"},
	{"cpu_user_pct", 'p', "%"}, {"cpu_system_pct", 'p', "%"}, {"cpu_iowait_pct", 'p', "%"},
	{"load_1m", 'g', ""}, {"load_15m", 'g', ""}, {"mem_used_mb", 'g', "MiB"},
	{"mem_cache_mb", 'g', "MiB"}, {"heap_alloc_mb", 'g', "MiB"}, {"gc_pause_p99_us", 'g', "µs"},
	{"goroutines", 'c', ""}, {"open_fds", 'c', ""}, {"disk_write_iops", 'g', "iops"},
	{"disk_used_pct", 'p', "%"}, {"net_rx_kbps", 'g', "kbit/s"}, {"net_tx_kbps", 'g', "kbit/s"},
	{"tcp_established", 'c', ""}, {"db_queries_total", 'c', "queries"}, {"db_query_p99_ms", 'g', "ms"},
	{"db_pool_in_use", 'c', "conns"}, {"db_replication_lag_ms", 'g', "ms"}, {"cache_hit_ratio_pct", 'p', "%"},
	{"queue_depth", 'c', "jobs"}, {"queue_oldest_s", 'g', "s"}, {"jobs_failed_total", 'c', "jobs"},
	{"orders_total", 'c', "orders"}, {"orders_value_eur", 'g', "EUR"}, {"carts_open", 'c', "carts"},
	{"checkout_conversion_pct", 'p', "%"}, {"active_sessions", 'c', "sessions"}, {"ws_connections", 'c', "conns"},
	{"error_budget_left_pct", 'p', "%"}, {"slo_availability_pct", 'p', "%"}, {"apdex", 'g', ""},
	{"uptime_s", 'c', "s"},
}

// dashboardPanels describe how a dashboard shows the object: the part that
// never changes.
var dashboardPanels = []struct{ id, title, kind, unit, metric string }{
	{"p01", "Request rate", "timeseries", "req/s", "http_requests_total"},
	{"p02", "Server errors", "bars", "req/s", "http_requests_5xx"},
	{"p03", "Latency", "timeseries", "ms", "http_request_p99_ms"},
	{"p04", "CPU", "stacked", "percent", "cpu_user_pct"},
	{"p05", "Memory", "stacked", "MiB", "mem_used_mb"},
	{"p06", "Database", "timeseries", "ms", "db_query_p99_ms"},
	{"p07", "Queue", "timeseries", "jobs", "queue_depth"},
	{"p08", "Business", "stat", "EUR", "orders_value_eur"},
}

var (
	dashboardServices = []string{"checkout-api", "search-gateway", "billing-worker", "inventory-sync", "auth-edge", "media-resizer", "notifications", "recommendations"}
	dashboardRegions  = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1"}
	dashboardTeams    = []string{"team-payments", "team-discovery", "team-platform", "team-growth"}
)

// mix64 is splitmix64's finaliser: a deterministic value from any input.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// appendDashboard appends the data of event seq (1-based) of topic to dst:
// the dashboard object of key seq mod keys after its update seq/keys. The
// object is a function of (topic, key, update) alone, so any publisher can
// write it, and update u differs from update u-1 of the same key in one
// metric, metric u mod M, besides bseq and bts.
func appendDashboard(dst []byte, topic int, keys int, seq, sent int64) []byte {
	keys = max(keys, 1)
	key := seq % int64(keys)
	u := seq / int64(keys)
	id := uint64(topic)<<32 ^ uint64(key)
	dst = append(dst, `{"bseq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"bts":`...)
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, `,"widget":"k`...)
	dst = strconv.AppendInt(dst, key, 10)
	h := mix64(id)
	dst = append(dst, `","service":"`...)
	dst = append(dst, dashboardServices[h%uint64(len(dashboardServices))]...)
	dst = append(dst, `","region":"`...)
	dst = append(dst, dashboardRegions[h>>8%uint64(len(dashboardRegions))]...)
	dst = append(dst, `","owner":"`...)
	dst = append(dst, dashboardTeams[h>>16%uint64(len(dashboardTeams))]...)
	dst = append(dst, `","environment":"production","refresh_s":5,"window_s":300,"metrics":[`...)
	m := int64(len(dashboardMetrics))
	for j, mt := range dashboardMetrics {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":"`...)
		dst = append(dst, mt.name...)
		dst = append(dst, `","value":`...)
		// The last update that set metric j: the newest v <= u with
		// v mod M == j; none yet gives its initial value.
		v := u - ((u-int64(j))%m+m)%m
		seed := mix64(id ^ uint64(j)<<48)
		switch mt.kind {
		case 'c':
			start := int64(seed % 5_000_000)
			if v >= 0 {
				start += (v/m + 1) * int64(1+seed>>40%977)
			}
			dst = strconv.AppendInt(dst, start, 10)
		case 'g':
			r := mix64(seed^uint64(v+1)) % 100_000 // 0.00 to 999.99
			dst = strconv.AppendUint(dst, r/100, 10)
			dst = append(dst, '.', byte('0'+r/10%10), byte('0'+r%10))
		default:
			r := mix64(seed^uint64(v+1)) % 1000 // 0.0 to 99.9
			dst = strconv.AppendUint(dst, r/10, 10)
			dst = append(dst, '.', byte('0'+r%10))
		}
		dst = append(dst, `,"unit":"`...)
		dst = append(dst, mt.unit...)
		dst = append(dst, `","status":"`...)
		dst = append(dst, [...]string{"ok", "ok", "ok", "ok", "ok", "ok", "warn", "critical"}[seed>>56&7]...)
		dst = append(dst, `"}`...)
	}
	dst = append(dst, `],"panels":[`...)
	for i, p := range dashboardPanels {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":"`...)
		dst = append(dst, p.id...)
		dst = append(dst, `","title":"`...)
		dst = append(dst, p.title...)
		dst = append(dst, `","kind":"`...)
		dst = append(dst, p.kind...)
		dst = append(dst, `","unit":"`...)
		dst = append(dst, p.unit...)
		dst = append(dst, `","metric":"`...)
		dst = append(dst, p.metric...)
		dst = append(dst, `"}`...)
	}
	return append(dst, `]}`...)
}
