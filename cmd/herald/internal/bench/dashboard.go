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
	// a service): a JSON object of about 3 KB with some 60 metrics, panel
	// descriptions and labels, of which each event of a key changes one
	// metric, besides bseq and bts. Successive events of a key differ
	// little, which is what deltas and compression are for.
	ShapeDashboard = "dashboard"
)

// dashboardMetrics are the metric names of a dashboard object, with the
// kind of value each has: a counter that only grows, a gauge with two
// decimals, or a percentage.
var dashboardMetrics = []struct {
	name string
	kind byte // 'c' counter, 'g' gauge, 'p' percent
}{
	{"http_requests_total", 'c'}, {"http_requests_2xx", 'c'}, {"http_requests_3xx", 'c'},
	{"http_requests_4xx", 'c'}, {"http_requests_5xx", 'c'}, {"http_request_p50_ms", 'g'},
	{"http_request_p90_ms", 'g'}, {"http_request_p99_ms", 'g'}, {"http_request_max_ms", 'g'},
	{"http_in_flight", 'c'}, {"http_bytes_in", 'c'}, {"http_bytes_out", 'c'},
	{"cpu_user_pct", 'p'}, {"cpu_system_pct", 'p'}, {"cpu_iowait_pct", 'p'}, {"cpu_steal_pct", 'p'},
	{"load_1m", 'g'}, {"load_5m", 'g'}, {"load_15m", 'g'}, {"mem_used_mb", 'g'},
	{"mem_cache_mb", 'g'}, {"mem_free_mb", 'g'}, {"swap_used_mb", 'g'}, {"heap_alloc_mb", 'g'},
	{"gc_pause_p99_us", 'g'}, {"gc_cycles_total", 'c'}, {"goroutines", 'c'}, {"threads", 'c'},
	{"open_fds", 'c'}, {"disk_read_iops", 'g'}, {"disk_write_iops", 'g'}, {"disk_used_pct", 'p'},
	{"net_rx_kbps", 'g'}, {"net_tx_kbps", 'g'}, {"net_retransmits_total", 'c'}, {"tcp_established", 'c'},
	{"db_queries_total", 'c'}, {"db_query_p99_ms", 'g'}, {"db_pool_in_use", 'c'}, {"db_pool_idle", 'c'},
	{"db_replication_lag_ms", 'g'}, {"cache_hits_total", 'c'}, {"cache_misses_total", 'c'}, {"cache_hit_ratio_pct", 'p'},
	{"queue_depth", 'c'}, {"queue_oldest_s", 'g'}, {"jobs_done_total", 'c'}, {"jobs_failed_total", 'c'},
	{"orders_total", 'c'}, {"orders_value_eur", 'g'}, {"carts_open", 'c'}, {"checkout_conversion_pct", 'p'},
	{"payments_declined_total", 'c'}, {"signups_total", 'c'}, {"active_sessions", 'c'}, {"ws_connections", 'c'},
	{"error_budget_left_pct", 'p'}, {"slo_availability_pct", 'p'}, {"apdex", 'g'}, {"uptime_s", 'c'},
}

// dashboardPanels describe how a dashboard shows the object: the part that
// never changes.
var dashboardPanels = []struct{ id, title, kind, unit, metric string }{
	{"p01", "Request rate", "timeseries", "req/s", "http_requests_total"},
	{"p02", "Errors by class", "bars", "req/s", "http_requests_5xx"},
	{"p03", "Latency percentiles", "timeseries", "ms", "http_request_p99_ms"},
	{"p04", "CPU", "stacked", "percent", "cpu_user_pct"},
	{"p05", "Memory", "stacked", "MiB", "mem_used_mb"},
	{"p06", "Garbage collection", "timeseries", "µs", "gc_pause_p99_us"},
	{"p07", "Disk", "timeseries", "iops", "disk_write_iops"},
	{"p08", "Network", "timeseries", "kbit/s", "net_rx_kbps"},
	{"p09", "Database", "timeseries", "ms", "db_query_p99_ms"},
	{"p10", "Cache", "gauge", "percent", "cache_hit_ratio_pct"},
	{"p11", "Queue", "timeseries", "jobs", "queue_depth"},
	{"p12", "Business", "stat", "EUR", "orders_value_eur"},
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
	dst = append(dst, `","environment":"production","refresh_s":5,"window_s":300,"metrics":{`...)
	m := int64(len(dashboardMetrics))
	for j, mt := range dashboardMetrics {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, mt.name...)
		dst = append(dst, `":`...)
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
		default:
			r := mix64(seed ^ uint64(v+1))
			whole, frac := r%100_000, r>>32%100
			if mt.kind == 'p' {
				whole %= 100
			}
			dst = strconv.AppendUint(dst, whole, 10)
			dst = append(dst, '.', byte('0'+frac/10), byte('0'+frac%10))
		}
	}
	dst = append(dst, `},"panels":[`...)
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
		dst = append(dst, `","thresholds":{"warn":`...)
		dst = strconv.AppendUint(dst, mix64(id^uint64(i))%1000, 10)
		dst = append(dst, `,"crit":`...)
		dst = strconv.AppendUint(dst, 1000+mix64(id^uint64(i)<<8)%9000, 10)
		dst = append(dst, `}}`...)
	}
	return append(dst, `]}`...)
}
