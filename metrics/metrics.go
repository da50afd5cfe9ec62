// Package metrics exports a Herald node's workings to Prometheus
// (prometheus/client_golang): its connections, events, actions, broker
// and HTTP requests, plus the Go runtime's and the process's own metrics.
//
// Most figures are counters the hub and the action service keep anyway:
// they are read when Prometheus scrapes, so serving metrics costs nothing
// on the delivery path. Only the histograms (delivery latency, action and
// request durations) are fed as things happen, through the Observe
// methods, which are safe for concurrent use.
//
// No label takes an unbounded value: topics, users and action types never
// become labels. Labels are the transport, a disconnect reason (a fixed
// set), an HTTP route (the server's route patterns) and status code, an
// action's final status, a broker operation, and a source (where a replay
// read from, or an outbox source from the configuration).
package metrics

import (
	"context"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/outbox"
)

const namespace = "herald"

// boundsTimeout bounds the broker call a scrape makes for the history
// size, so that a hung broker cannot hang the scrape.
const boundsTimeout = time.Second

// Metrics is one node's registry. Create it with New, give its Observe
// methods to the hub, the action service and the HTTP router, then Attach
// the hub and the actions. Safe for concurrent use.
type Metrics struct {
	reg            *prometheus.Registry
	latency        prometheus.Histogram
	actionDuration *prometheus.HistogramVec
	requests       *prometheus.CounterVec
	requestTime    *prometheus.HistogramVec
}

// New returns a registry with the Go runtime and process collectors
// (goroutines, heap, open file descriptors, …) and Herald's histograms.
// version is reported by herald_build_info.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "delivery_latency_seconds",
			Help:      "Time from publishing a live event to writing it to a connection (the oldest event of each write).",
			Buckets:   []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		actionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "action_duration_seconds",
			Help:      "Time from accepting an action to its final status, by that status.",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"status"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_requests_total",
			Help:      "HTTP requests by route pattern and status code, counted when they end (streams included).",
		}, []string{"route", "code"}),
		requestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "http_request_duration_seconds",
			Help:      "Duration of HTTP requests by route pattern; streams (/v1/events, /v1/ws) are left out.",
			Buckets:   []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion},
	})
	build.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build,
	)
	m.reg.MustRegister(m.own()...)
	return m
}

// own lists the collectors of Herald's own metrics that New registers
// (the node's counters, a collector, are registered by Attach), in one place
// for New and for the test that every metric is documented.
func (m *Metrics) own() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.actionDuration, m.requests, m.requestTime}
}

// Handler serves the registry in Prometheus's text (or OpenMetrics)
// format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveLatency records one publish-to-write latency (hub.Options).
func (m *Metrics) ObserveLatency(d time.Duration) { m.latency.Observe(d.Seconds()) }

// ObserveAction records an action's duration (action.Options).
func (m *Metrics) ObserveAction(st action.Status, d time.Duration) {
	m.actionDuration.WithLabelValues(string(st)).Observe(d.Seconds())
}

// ObserveRequest records an HTTP request that ended (httpapi.Config).
// route is the route's pattern, "" for a request no route matched.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, codeLabel(code)).Inc()
	if route != "/v1/events" && route != "/v1/ws" {
		m.requestTime.WithLabelValues(route).Observe(d.Seconds())
	}
}

// codes holds the labels of the usual status codes, so that a request
// does not format one.
var codes = func() map[int]string {
	c := map[int]string{}
	for code := 100; code < 600; code++ {
		if http.StatusText(code) != "" {
			c[code] = strconv.Itoa(code)
		}
	}
	return c
}()

func codeLabel(code int) string {
	if s, ok := codes[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}

// Attach registers the collector that reads h's counters, those of
// actions (which may be nil: actions off) and those of the event sources,
// at each scrape.
func (m *Metrics) Attach(h *hub.Hub, actions action.Runner, sources []*outbox.Source) {
	m.reg.MustRegister(&collector{hub: h, actions: actions, sources: sources})
}

// collector turns the hub's, the action service's and the sources'
// counters into metrics when Prometheus scrapes.
type collector struct {
	hub     *hub.Hub
	actions action.Runner
	sources []*outbox.Source
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	descConnections   = desc("connections", "Open subscriber connections, by transport.", "transport")
	descConnects      = desc("connects_total", "Subscriber connections opened, by transport.", "transport")
	descDisconnects   = desc("disconnects_total", "Subscriber connections ended, by transport and reason (closed, slow_consumer, shutdown, log_replaced, unauthorized, disconnected, error).", "transport", "reason")
	descPublished     = desc("events_published_total", "Events published through this node.")
	descDeliveries    = desc("deliveries_total", "Events queued to subscriber connections.")
	descDirectWrites  = desc("direct_writes_total", "Deliveries written to idle connections by the hub's dispatchers themselves rather than their writers (--direct-writes); counted in deliveries_total too.")
	descConflated     = desc("events_conflated_total", "Queued events that a later event of the same topic and key replaced before they were written, on connections that asked for conflation.")
	descDropped       = desc("events_dropped_total", "Queued events discarded because their connection ended (a slow consumer, a shutdown) before they were written; the client resumes from its cursor.")
	descPresRefused   = desc("presence_refused_total", "Joins refused: a topic at --presence-max-members, a full queue of joins, or a broker that keeps no presence.")
	descQueueBytes    = desc("queue_bytes", "Bytes waiting in the outbound queues of all connections.")
	descQueueBytesMax = desc("queue_bytes_max", "Bytes waiting in the fullest outbound queue.")
	descReplayPages   = desc("replay_pages_total", "Pages of history read by replays (the catch-up of a resumed subscription), by where from: tail (the node's memory of the newest events, --tail-bytes) or broker.", "source")
	descHistory       = desc("history_events", "Events the broker's log retains (approximately, on NATS).")
	descBrokerUp      = desc("broker_up", "1 when the broker answered this scrape's query, else 0.")
	descBrokerErrors  = desc("broker_errors_total", "Failed broker operations, by operation (publish: a publish the broker refused or could not take; deliver: a failed read of the log, or on NATS a failed write of the keyed state, retried).", "op")
	descReconnects    = desc("broker_reconnects_total", "Times the broker connection or its delivery recovered after a failure.")
	descActAccepted   = desc("actions_accepted_total", "Actions accepted (202).")
	descActFinished   = desc("actions_finished_total", "Actions that reached a final status on this node, by status.", "status")
	descActRetried    = desc("actions_retried_total", "Attempts at actions after their first.")
	descActRejected   = desc("actions_rejected_total", "Actions refused because the queue was full (503).")
	descActQueued     = desc("actions_queued", "Actions waiting for a worker on this node (0 with a shared broker, whose queue is shared).")
	descActRunning    = desc("actions_running", "Actions running on this node.")
	descSrcPublished  = desc("source_rows_published_total", "Rows of an outbox source published by this node.", "source")
	descSrcDead       = desc("source_dead_letters_total", "Rows of an outbox source moved to its dead-letter table by this node.", "source")
	descSrcUp         = desc("source_up", "1 when this node reaches the source's database (consuming or standing by), else 0.", "source")
	descSrcConsuming  = desc("source_consuming", "1 when this node is the one consuming the source's table, else 0.", "source")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descConnections, descConnects, descDisconnects, descPublished, descDeliveries, descDirectWrites, descDropped, descConflated, descPresRefused,
		descQueueBytes, descQueueBytesMax, descReplayPages, descHistory, descBrokerUp, descBrokerErrors, descReconnects,
		descActAccepted, descActFinished, descActRetried, descActRejected, descActQueued, descActRunning,
		descSrcPublished, descSrcDead, descSrcUp, descSrcConsuming,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	st := c.hub.Stats()
	for _, t := range transports(st) {
		gauge(descConnections, st.Clients[t], t)
		counter(descConnects, st.Connects[t], t)
	}
	for t, reasons := range st.Disconnects {
		for r, n := range reasons {
			counter(descDisconnects, n, t, r)
		}
	}
	counter(descPublished, st.Published)
	counter(descDeliveries, st.Delivered)
	counter(descDirectWrites, st.DirectWrites)
	counter(descDropped, st.Dropped)
	counter(descConflated, st.Conflated)
	counter(descPresRefused, st.PresenceRefused)
	gauge(descQueueBytes, st.QueueBytes)
	gauge(descQueueBytesMax, st.QueueBytesMax)
	for src, n := range st.ReplayPages {
		counter(descReplayPages, n, src)
	}
	counter(descBrokerErrors, st.PublishErrors, "publish")
	counter(descBrokerErrors, st.PresenceErrors, "presence")
	if st.Broker != nil {
		counter(descBrokerErrors, st.Broker.Errors, "deliver")
		counter(descReconnects, st.Broker.Reconnects)
	}
	ctx, cancel := context.WithTimeout(context.Background(), boundsTimeout)
	b, err := c.hub.Bounds(ctx)
	cancel()
	if err != nil {
		gauge(descBrokerUp, 0)
	} else {
		gauge(descBrokerUp, 1)
		gauge(descHistory, int64(b.Last+1-min(b.First, b.Last+1)))
	}
	for _, src := range c.sources {
		name, st := src.Name(), src.Status().State
		counter(descSrcPublished, int64(src.Published()), name)
		counter(descSrcDead, int64(src.Dead()), name)
		gauge(descSrcUp, b2i(st == outbox.StateConsuming || st == outbox.StateStandby), name)
		gauge(descSrcConsuming, b2i(st == outbox.StateConsuming), name)
	}
	if c.actions == nil {
		return
	}
	as := c.actions.Stats()
	counter(descActAccepted, as.Accepted)
	counter(descActFinished, as.Succeeded, string(action.Succeeded))
	counter(descActFinished, as.Failed, string(action.Failed))
	counter(descActRetried, as.Retried)
	counter(descActRejected, as.RejectedFull)
	gauge(descActQueued, as.Queued)
	gauge(descActRunning, as.Running)
}

// transports lists Herald's transports and any other seen so far, so
// that a transport with no connection reports 0 rather than nothing.
func transports(st hub.Stats) []string {
	seen := map[string]bool{"sse": true, "ws": true}
	out := []string{"sse", "ws"}
	for _, m := range []map[string]int64{st.Connects, st.Clients} {
		for t := range m {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
