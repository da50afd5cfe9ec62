// Package bench drives a Herald server with many subscribers and fixed-rate
// publishers, and measures what the subscribers observe: deliveries per
// second, loss, duplicates, order, and publish-to-receive latency.
//
// It runs in its own process (the server's file limit and CPU stay the
// server's), spreads connections over several loopback source addresses
// because one address has only ~28k ephemeral ports, and stamps each event
// with its intended send time so latency includes any time a late publisher
// spent catching up (no coordinated omission).
package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Config describes one run.
type Config struct {
	Mode       string // "fanout" (default), "actions", "connect" or "idle"; see Run
	ActionType string // actions mode: the action type to post (default "echo", whose result is its payload)
	// URL is the server's base URL, e.g. http://127.0.0.1:8080, or the
	// nodes of a cluster as a comma-separated list: subscriber i connects
	// first to node (i/2 + i%2) mod n, so that each node has its share of
	// both transports in a mixed run, and whenever its node ends its
	// connection (for whatever reason) it resumes from its cursor on
	// another node: a failover, counted in the report. A dead node's
	// subscribers spread evenly over the others. Publishers, priming,
	// stalled connections and the server CPU use the first node unless
	// told otherwise.
	URL string
	// PublishURL, if set, is where publishers and actions go instead of
	// URL: another node of a cluster, so that every delivery crosses the
	// broker.
	PublishURL  string
	Transport   string        // "ws", "sse" or "mixed" (half and half)
	Subscribers int           // subscriber connections
	Topics      int           // topics bench.0 … bench.K-1; subscriber i takes topic i mod K
	Publishers  int           // publishing goroutines, each owning a share of the topics
	Rate        float64       // publishes per second, all publishers together
	Batch       int           // events per publish request (1 = single form)
	Duration    time.Duration // publishing time; in idle mode, how long to hold the connections
	Ramp        float64       // connect and idle modes: new connections per second while ramping (0: as fast as DialWorkers allow)
	// ServerPID is the server's process on this machine: idle mode samples
	// its VmRSS, fan-out mode its CPU time (0: not measured; fan-out reads
	// the CPU time from /metrics then, see servercpu.go).
	ServerPID int
	// ServerDebug is the base URL of the server's --metrics-addr listener.
	// In idle mode (herald serve --pprof), before each VmRSS sample the
	// server is asked to collect garbage and return free memory to the
	// system, so the sample is what it holds, not the collector's reserve.
	// In fan-out mode, the server's CPU time is read from its /metrics.
	ServerDebug string
	Payload     int           // padding bytes per event (ShapePad)
	Keys        int           // publish keyed events, cycling through this many keys per topic (0: no key)
	SourceIPs   int           // spread connections over 127.0.0.1 … 127.0.0.N
	DialWorkers int           // concurrent connection attempts while ramping
	Drain       time.Duration // how long to wait for stragglers after publishing
	Prefix      string        // topic prefix (default "bench")
	// Settle holds the connected subscribers idle this long before
	// publishing (and priming) starts, so that a server's memory can be
	// sampled with every connection held and none busy.
	Settle time.Duration

	// PayloadShape is the data of each event: ShapePad (default) or
	// ShapeDashboard; see dashboard.go.
	PayloadShape string
	// WSCompression has WebSocket subscribers offer permessage-deflate
	// without context takeover, and inflate what comes compressed.
	WSCompression bool
	// Prime, with Keys, publishes each key of each topic once before the
	// measured phase and waits until every subscriber has them: the
	// figures (rates, latency, bytes on the wire, server CPU) are then
	// those of a steady state, in which every key has a previous event.
	// The primed events still count towards loss and order.
	Prime bool
	// Delta has WebSocket subscribers ask for fossil deltas of keyed
	// events ("delta":"fossil"), rebuild each event's data and check it
	// against what was published (error kind "delta_mismatch"). It needs
	// Keys. Each connection keeps the data of every key of its topic.
	Delta bool

	// Shard and Shards split one run over several bench processes (a
	// process may hold at most ~20k sockets): shard i of n (1-based) takes
	// its share of Subscribers and of Rate, its own topics (Prefix-sI) and
	// its own source addresses, so the shards' reports add up. Shards 0
	// means no split.
	Shard, Shards int
	TLS           *tls.Config // for https URLs; nil: the system's roots

	// Events, if positive, is how many events (actions mode: actions) the
	// run publishes in all, at Rate: publishing ends after the last one,
	// and Duration plays no part. A report can then say whether every
	// subscriber ended with every event.
	Events int64
	// ChaosDisconnect is forced disconnects per second while publishing
	// (fan-out and actions modes): each closes the connection of a random
	// subscriber from the client side, and the subscriber reconnects at
	// once and resumes from the last event it received (SSE with
	// Last-Event-ID, WebSocket with subscribe since). See chaos.go.
	ChaosDisconnect float64
	// Stall is how many extra connections subscribe to every topic of the
	// run and then never read, so that their receive windows fill. They are
	// not among Subscribers and not in the figures; see stall.go.
	Stall int
	// Seed seeds the run's random choices (which subscriber the chaos
	// disconnects); 0 draws one. The report gives the seed used, so a run
	// can be replayed.
	Seed uint64

	sourceBase int      // the first source address is 127.0.0.(1+sourceBase)
	urls       []string // the nodes of URL; URL itself is then the first
	// Progress, if set, is called about once a second with a status line.
	Progress func(Status)
}

// Status is a one-second snapshot for a live display.
type Status struct {
	Elapsed       time.Duration
	Connected     int64
	DeliveriesSec float64
	RateName      string // what DeliveriesSec counts: "deliveries/s" (default) or "accepted/s" (requests)
	P50, P99      time.Duration
	Errors        int64
	Phase         string // "ramp" or "hold" in the connect and idle modes; empty in fan-out
}

// Report is the result of a run, in the shape SPEC requires of `herald bench --json`.
type Report struct {
	Mode             string           `json:"mode"`
	Shard            string           `json:"shard,omitempty"` // "i/n" when the run is one of several
	Transport        string           `json:"transport"`
	Subscribers      int              `json:"subscribers"`
	Connected        int              `json:"connected"`
	DurationS        float64          `json:"duration_s"`
	Published        int64            `json:"published"`
	Expected         int64            `json:"expected_deliveries"`
	Delivered        int64            `json:"delivered"`
	OfferedPerSec    float64          `json:"offered_per_sec"`
	DeliveriesPerSec float64          `json:"deliveries_per_sec"`
	Lost             int64            `json:"lost"`
	Duplicates       int64            `json:"duplicates"`
	OutOfOrder       int64            `json:"out_of_order"`
	LatencyMS        Latency          `json:"latency_ms"`
	ConnectMS        Latency          `json:"connect_ms"`
	Errors           map[string]int64 `json:"errors"`
	// Incomplete counts the subscribers that did not end with every event
	// published to their topic (0 exactly when Lost is 0).
	Incomplete int `json:"incomplete_subscribers"`
	// Resets counts herald.reset events received: the server said a
	// subscriber missed events it could no longer replay.
	Resets int64 `json:"resets"`
	// Seed seeded the run's random choices (Config.Seed, or the one drawn).
	Seed uint64 `json:"seed"`

	// With several nodes in Config.URL: how many, the subscribers that
	// connected to each at first (in the order of the list), and the
	// connections a node ended that resumed on another (failovers, also
	// among Reconnects).
	Nodes         int   `json:"nodes,omitempty"`
	NodeConnected []int `json:"node_connected,omitempty"`
	Failovers     int64 `json:"failovers,omitempty"`

	// With Config.ChaosDisconnect: the disconnects forced, the reconnects
	// that resumed a subscriber, and the time each reconnect took, from
	// dial to subscribed.
	Disconnects int64    `json:"chaos_disconnects,omitempty"`
	Reconnects  int64    `json:"reconnects,omitempty"`
	ReconnectMS *Latency `json:"reconnect_ms,omitempty"`
	// With Config.Stall: the stalled connections opened, and how many of
	// them the server had closed by the end of the run.
	Stalled             int `json:"stalled,omitempty"`
	StalledDisconnected int `json:"stalled_disconnected,omitempty"`

	// Bytes on the wire, fan-out mode, over the WebSocket connections that
	// stayed open from the start of publishing to the end of the run:
	// the kernel's count of TCP payload bytes they received (TCP_INFO), the
	// events delivered on them, and the bytes those events take as
	// uncompressed frames carrying whole data; per event, and the ratio
	// of the two (compression and deltas below 1).
	WireConnections      int     `json:"wire_connections,omitempty"`
	WireBytes            int64   `json:"wire_bytes,omitempty"`
	WireDeliveries       int64   `json:"wire_deliveries,omitempty"`
	WireBytesPerEvent    float64 `json:"wire_bytes_per_event,omitempty"`
	PayloadBytesPerEvent float64 `json:"payload_bytes_per_event,omitempty"`
	CompressionRatio     float64 `json:"compression_ratio,omitempty"`
	// The run's payload and what the WebSocket subscribers asked for:
	// compression offered, and the connections on which the server
	// accepted it, of all WebSocket connections opened (reconnects
	// included); deltas asked for, and the deliveries that came as a delta.
	PayloadShape       string `json:"payload_shape,omitempty"`
	KeySpace           int    `json:"key_space,omitempty"`
	WSCompression      bool   `json:"ws_compression,omitempty"`
	WSConnections      int64  `json:"ws_connections,omitempty"`
	DeflateConnections int64  `json:"ws_deflate_connections,omitempty"`
	Delta              bool   `json:"delta,omitempty"`
	DeltaDeliveries    int64  `json:"delta_deliveries,omitempty"`
	// The server's CPU time from the start of publishing to the end of
	// the run, and per delivery (see servercpu.go); absent when it could
	// not be read.
	ServerCPUS             float64 `json:"server_cpu_s,omitempty"`
	ServerCPUUSPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerCPUError         string  `json:"server_cpu_error,omitempty"` // why they are absent
	// Primed is the events Config.Prime published before the measured
	// phase; the rates and figures leave their deliveries out, Published,
	// Expected, Delivered and Lost count them.
	Primed int64 `json:"primed_events,omitempty"`
	// ErrorSamples has the first error of each kind in Errors, as text.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`

	// Connect mode: connections per second over the ramp.
	ConnectsPerSec float64 `json:"connects_per_sec,omitempty"`
	// Idle mode with Config.ServerPID: the server's VmRSS before the first
	// connection and at the end of the hold, and the growth per connection.
	ServerRSSKBBefore int64 `json:"server_rss_kb_before,omitempty"`
	ServerRSSKBAfter  int64 `json:"server_rss_kb_after,omitempty"`
	RSSPerConnBytes   int64 `json:"rss_per_conn_bytes,omitempty"`
	RSSAfterGC        bool  `json:"rss_after_gc,omitempty"` // the samples followed a collection (Config.ServerDebug)

	// Actions mode: actions accepted (202) and the time to that answer.
	Accepted       int64    `json:"accepted,omitempty"`
	AcceptedPerSec float64  `json:"accepted_per_sec,omitempty"`
	AcceptMS       *Latency `json:"accept_ms,omitempty"`
	// Fan-out mode: the publish requests' time from scheduled send to answer.
	PublishMS *Latency `json:"publish_ms,omitempty"`

	// Timeline has one sample per second of the run; Histogram is the
	// distribution of the mode's main latency (publish to receive in
	// fan-out, 202 time in actions, connect time otherwise).
	Timeline  []Sample `json:"timeline,omitempty"`
	Histogram []Bucket `json:"histogram,omitempty"`
}

// Sample is one second of a run. Rate is what the mode counts per second:
// deliveries (fanout), accepted actions (actions) or new connections
// (connect, idle); the latencies are of that second alone.
type Sample struct {
	T         float64 `json:"t"` // seconds since the measured phase began
	Connected int64   `json:"connected"`
	Rate      float64 `json:"rate"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
	Errors    int64   `json:"errors"`
}

// Bucket is one bar of a latency histogram: Count values in (previous
// bucket's UpToMS, UpToMS].
type Bucket struct {
	UpToMS float64 `json:"le_ms"`
	Count  int64   `json:"count"`
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func (c *Config) defaults() error {
	if c.URL == "" {
		c.URL = "http://127.0.0.1:8080"
	}
	c.urls = c.urls[:0]
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if _, err := newEndpoint(u, "", c.TLS, nil); err != nil {
			return err
		}
		c.urls = append(c.urls, u)
	}
	c.URL = c.urls[0]
	if c.PublishURL != "" {
		c.PublishURL = strings.TrimRight(c.PublishURL, "/")
		if _, err := newEndpoint(c.PublishURL, "", c.TLS, nil); err != nil {
			return err
		}
	}
	switch c.Mode {
	case "":
		c.Mode = ModeFanout
	case ModeFanout, ModeActions, ModeConnect, ModeIdle:
	default:
		return fmt.Errorf("unknown mode %q (want fanout, actions, connect or idle)", c.Mode)
	}
	if c.ActionType == "" {
		c.ActionType = "echo"
	}
	if c.Ramp < 0 || c.ServerPID < 0 {
		return errors.New("ramp and server pid must not be negative")
	}
	switch c.Transport {
	case "":
		c.Transport = "ws"
	case "ws", "sse", "mixed":
	default:
		return fmt.Errorf("unknown transport %q (want ws, sse or mixed)", c.Transport)
	}
	if c.Subscribers < 0 || c.Topics < 0 || c.Publishers < 0 || c.Rate < 0 || c.Payload < 0 || c.Keys < 0 {
		return errors.New("counts and rates must not be negative")
	}
	if c.Events < 0 || c.ChaosDisconnect < 0 || c.Stall < 0 {
		return errors.New("events, chaos disconnects and stalled connections must not be negative")
	}
	if (c.Events > 0 || c.ChaosDisconnect > 0 || c.Stall > 0) && c.Mode != ModeFanout && c.Mode != ModeActions {
		return fmt.Errorf("events, chaos disconnects and stalled connections need the fanout or actions mode, not %s", c.Mode)
	}
	if c.Keys > 0 && c.Mode != ModeFanout {
		return fmt.Errorf("keys need the fanout mode, which publishes events, not %s", c.Mode)
	}
	switch c.PayloadShape {
	case "":
		c.PayloadShape = ShapePad
	case ShapePad, ShapeDashboard:
	default:
		return fmt.Errorf("unknown payload shape %q (want %s or %s)", c.PayloadShape, ShapePad, ShapeDashboard)
	}
	if c.PayloadShape != ShapePad && c.Mode != ModeFanout {
		return fmt.Errorf("payload shape %s needs the fanout mode, not %s", c.PayloadShape, c.Mode)
	}
	if c.WSCompression && c.Transport == "sse" {
		return errors.New("WebSocket compression needs WebSocket subscribers (transport ws or mixed)")
	}
	if c.Prime && (c.Keys == 0 || c.Mode != ModeFanout) {
		return errors.New("priming needs keyed events (key space > 0) and the fanout mode")
	}
	if c.Delta && (c.Keys == 0 || c.Transport != "ws" || c.Mode != ModeFanout) {
		return errors.New("deltas need keyed events (key space > 0), transport ws and the fanout mode")
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64() | 1 // never 0, which would mean "draw one" on a replay
	}
	if c.Topics == 0 {
		c.Topics = 1
	}
	if c.Publishers == 0 {
		c.Publishers = 1
	}
	if c.Publishers > c.Topics {
		c.Publishers = c.Topics
	}
	if c.Batch <= 0 || c.Mode == ModeActions {
		c.Batch = 1 // actions have no batch form
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.SourceIPs <= 0 {
		c.SourceIPs = 1
	}
	if c.SourceIPs > 254 {
		c.SourceIPs = 254
	}
	if c.DialWorkers <= 0 {
		c.DialWorkers = 64
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "bench"
	}
	if c.Shards < 0 || c.Shards > 0 && (c.Shard < 1 || c.Shard > c.Shards) {
		return fmt.Errorf("shard %d/%d: want i/n with 1 <= i <= n", c.Shard, c.Shards)
	}
	if c.Shards > 1 {
		i, n := c.Shard, c.Shards
		c.Subscribers = c.Subscribers*i/n - c.Subscribers*(i-1)/n
		c.Stall = c.Stall*i/n - c.Stall*(i-1)/n
		c.Events = c.Events*int64(i)/int64(n) - c.Events*int64(i-1)/int64(n)
		c.Rate /= float64(n)
		c.ChaosDisconnect /= float64(n)
		c.Prefix = fmt.Sprintf("%s-s%d", c.Prefix, i)
		c.sourceBase = (i - 1) * c.SourceIPs
		if c.sourceBase+c.SourceIPs > 254 {
			return fmt.Errorf("shard %d/%d with %d source addresses each needs more than 127.0.0.254", i, n, c.SourceIPs)
		}
	}
	return nil
}

// nodeURL is the base URL of node i of URL's list.
func (c *Config) nodeURL(i int) string {
	if len(c.urls) == 0 {
		return c.URL // a Config that did not go through defaults: one node
	}
	return c.urls[i]
}

// nodes is the number of nodes in URL's list.
func (c *Config) nodes() int { return max(len(c.urls), 1) }

// shardName is "i/n" for a sharded run, else empty.
func (c *Config) shardName() string {
	if c.Shards <= 1 {
		return ""
	}
	return fmt.Sprintf("%d/%d", c.Shard, c.Shards)
}

// run is the shared state of one run.
//
// Nothing on the per-event path is shared between connections: each
// subscriber keeps its own counters and latency batch, and takes its
// histogram shard's lock once per batch.
type run struct {
	cfg        Config
	start      time.Time
	hists      [64]lockedHist // publish to receive, sharded by subscriber
	reqHist    lockedHist     // publish or action request, scheduled send to answer
	connHist   lockedHist     // dial start to subscribed
	accepted   atomic.Int64   // events or actions the server accepted
	connected  atomic.Int64
	resets     atomic.Int64 // herald.reset events received
	cuts       atomic.Int64 // connections the chaos closed
	resumeHist lockedHist   // a reconnect after a chaos disconnect, dial start to subscribed
	errMu      sync.Mutex
	errs       map[string]int64
	errSamples map[string]string // the first error of each kind
	subs       []*subscriber
	phase      atomic.Value // string: what the progress line says the run is doing
	timeline   []Sample     // owned by the sampler until it stops

	// primeSeq is the last sequence number Config.Prime publishes on each
	// topic; the latency of those events is not recorded.
	primeSeq int64
	// With Config.Delta: the hashes of the data published, per topic, and
	// the subscribers' shared texts (deltas.go).
	pubLogs  []publishLog
	hashSeed maphash.Seed
	texts    *textCache
	// WebSocket connections opened, and those that negotiated compression.
	wsConns, deflateConns atomic.Int64
	// nodeConnected counts the subscribers whose first connection
	// succeeded, per node; written under connHist's lock during the ramp.
	nodeConnected []int
}

type lockedHist struct {
	sync.Mutex
	h *hdrhistogram.Histogram
}

// subscriber is one connection's view of its topic.
//
// Several publish requests for one topic may be in flight at once, and the
// server may order them either way, so loss and duplicates are judged on the
// publisher's sequence numbers with a sliding window, while order is judged
// on the server's own cursors, which must strictly increase per connection.
//
// The connection's reader goroutine owns it: only that goroutine writes any
// field, so none needs a lock. The two atomic counters are read concurrently
// by the progress display and the completion check; every other field is
// read by Run only after the reader has ended.
type subscriber struct {
	idx       int
	topic     int
	received  atomic.Int64 // distinct events received
	delivered atomic.Int64 // events received, duplicates included

	base     int64               // every seq <= base has been received
	window   [window / 64]uint64 // bit i: seq base+1+i received
	dups     int64
	ooo      int64
	cursor   uint64 // the last cursor's sequence part
	lastRecv int64  // unix ns of the newest delivery

	lats    [latBatch]int64 // latencies (µs) not yet in the histogram
	nlat    int
	flushed int64 // unix ns of the last flush

	// Resuming (chaos.go), owned by the reader like the fields above:
	// the epoch of the cursors received (the cursor's sequence is cursor),
	// the reconnects made, those of them to another node because the
	// node ended the connection, and the index in Config.urls of the node
	// connected to (set before the reader starts).
	epoch      string
	reconnects int64
	failovers  int64
	node       int
	// resumable is set once the subscriber has a cursor to resume from;
	// before that a forced disconnect could lose events for want of one,
	// which would be the test's doing, not the server's.
	resumable atomic.Bool
	// cutMu guards conn, the open connection (nil while reconnecting), and
	// cut, set when the chaos closed it on purpose.
	cutMu sync.Mutex
	conn  subConn
	cut   bool

	// payload is the uncompressed frame bytes of the events delivered on
	// WebSocket, whole data counted for a delta; written by the reader,
	// read by the wire snapshots.
	payload atomic.Int64
	// deltas is the deliveries that came as a delta; the reader's.
	deltas int64
	// wire0 is the WebSocket connection and its counts at the start of
	// publishing (wireStart); guarded by cutMu.
	wire0 wireMark
}

// latBatch latencies are recorded under one lock of a histogram shard, and
// a batch is flushed at least every flushEvery of receive time, so the live
// display lags little at low rates.
const (
	latBatch   = 256
	flushEvery = int64(200 * time.Millisecond)
)

// window is how far ahead of the oldest missing event a subscriber tracks
// arrivals; an event further ahead declares the oldest ones lost.
const window = 4096

// bit locates seq's slot: slots are indexed by seq modulo the window, so the
// window slides without moving any bit.
func (s *subscriber) bit(seq int64) (word int, mask uint64) {
	i := uint64(seq) % window
	return int(i / 64), 1 << (i % 64)
}

// advance slides the window while its first slot is filled.
func (s *subscriber) advance() {
	for {
		w, m := s.bit(s.base + 1)
		if s.window[w]&m == 0 {
			return
		}
		s.window[w] &^= m
		s.base++
	}
}

func (r *run) fail(kind string) {
	r.errMu.Lock()
	r.errs[kind]++
	r.errMu.Unlock()
}

// failWith counts an error of kind and keeps err's text if it is the
// first of its kind.
func (r *run) failWith(kind string, err error) {
	r.errMu.Lock()
	r.errs[kind]++
	if _, ok := r.errSamples[kind]; !ok && err != nil {
		if r.errSamples == nil {
			r.errSamples = map[string]string{}
		}
		r.errSamples[kind] = err.Error()
	}
	r.errMu.Unlock()
}

// errorCount is the number of errors of every kind so far.
func (r *run) errorCount() int64 {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	var n int64
	for _, c := range r.errs {
		n += c
	}
	return n
}

// observe records one event received by s: its server cursor's sequence,
// the publisher's sequence for its topic, the intended send time and the
// receive time (unix ns). Only s's owner may call it.
func (r *run) observe(s *subscriber, cursor uint64, seq, sentNS, nowNS int64) {
	if cursor <= s.cursor {
		s.ooo++
	}
	s.cursor = max(s.cursor, cursor)
	switch {
	case seq <= s.base:
		s.dups++
	case seq > s.base+window:
		// Far ahead: give up on the oldest missing ones (they count as lost).
		for seq > s.base+window {
			w, m := s.bit(s.base + 1)
			s.window[w] &^= m
			s.base++
			s.advance()
		}
		fallthrough
	default:
		w, m := s.bit(seq)
		if s.window[w]&m != 0 {
			s.dups++
		} else {
			s.window[w] |= m
			s.received.Add(1)
			s.advance()
		}
	}
	s.delivered.Add(1)
	s.lastRecv = max(s.lastRecv, nowNS)
	if seq <= r.primeSeq {
		return // before the measured phase
	}
	s.lats[s.nlat] = max((nowNS-sentNS)/1000, 0) // µs
	s.nlat++
	if s.nlat == len(s.lats) || nowNS-s.flushed >= flushEvery {
		r.flush(s)
	}
}

// flush moves s's pending latencies into its histogram shard. Only s's
// owner may call it.
func (r *run) flush(s *subscriber) {
	if s.nlat > 0 {
		lh := &r.hists[s.idx%len(r.hists)]
		lh.Lock()
		for _, v := range s.lats[:s.nlat] {
			_ = lh.h.RecordValue(v)
		}
		lh.Unlock()
		s.nlat = 0
	}
	s.flushed = s.lastRecv
}

// Run performs one run of cfg.Mode. In the default fan-out mode it
// connects the subscribers, publishes at the fixed rate for the duration,
// waits for stragglers, and reports; see runConnect and runIdle for the
// others.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, errs: map[string]int64{}, nodeConnected: make([]int, cfg.nodes())}
	if cfg.Prime {
		r.primeSeq = int64(cfg.Keys)
	}
	if cfg.Delta {
		r.pubLogs = make([]publishLog, cfg.Topics)
		r.hashSeed = maphash.MakeSeed()
		r.texts = newTextCache(r.hashSeed)
	}
	for i := range r.hists {
		r.hists[i].h = newHist()
	}
	r.reqHist.h, r.connHist.h, r.resumeHist.h = newHist(), newHist(), newHist()
	// Fixed before any goroutine starts: the progress display reads it.
	r.subs = make([]*subscriber, cfg.Subscribers)
	for i := range r.subs {
		r.subs[i] = &subscriber{idx: i, topic: i % cfg.Topics, node: (i/2 + i%2) % cfg.nodes()}
	}
	switch cfg.Mode {
	case ModeConnect:
		return r.runConnect(ctx)
	case ModeIdle:
		return r.runIdle(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Connect.
	var wg sync.WaitGroup
	srcs := newSources(cfg.sourceBase, cfg.SourceIPs)
	if err := r.ramp(ctx, srcs, &wg); err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	connected := int(r.connected.Load())
	stalled := r.openStalled(ctx, srcs)
	if cfg.Settle > 0 {
		t := time.NewTimer(cfg.Settle)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	// With Prime, every key once first, outside the figures.
	primed := map[int]int64{}
	if cfg.Prime {
		var err error
		if primed, err = r.prime(ctx); err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
	}

	// The server's CPU time and the subscribers' bytes on the wire before
	// the measured phase.
	cpu0, cpuErr := r.serverCPU(ctx)
	r.wireStart()
	before := r.delivered()

	// Publish at a fixed rate. In actions mode the main latency and rate are
	// the requests' own; deliveries (of result events) are still counted.
	r.start = time.Now()
	m := meter{
		name:  "deliveries/s",
		count: r.delivered,
		latency: func() *hdrhistogram.Histogram {
			shards := make([]*lockedHist, len(r.hists))
			for i := range r.hists {
				shards[i] = &r.hists[i]
			}
			return mergedCopy(shards...)
		},
	}
	if cfg.Mode == ModeActions || cfg.Subscribers == 0 {
		// With nobody to deliver to, the requests are what there is to watch.
		m = meter{name: "accepted/s", count: r.accepted.Load, latency: func() *hdrhistogram.Histogram { return mergedCopy(&r.reqHist) }}
	}
	stopSampler := r.sample(ctx, m)
	stopChaos := r.startChaos(ctx)
	published, perTopic := r.publish(ctx, primed)
	pubEnd := time.Now()
	stopChaos()

	// Wait for stragglers: until every subscriber has its topic's count, or Drain.
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r.complete(perTopic) {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	wire := r.wireEnd()
	var cpu1 float64
	if cpuErr == nil {
		cpu1, cpuErr = r.serverCPU(ctx)
	}
	stalledClosed := closedStalled(stalled)
	stopSampler()
	cancel()
	wg.Wait()

	rep := &Report{
		Mode:        cfg.Mode,
		Shard:       cfg.shardName(),
		Transport:   cfg.Transport,
		Subscribers: cfg.Subscribers,
		Connected:   connected,
		DurationS:   pubEnd.Sub(r.start).Seconds(),
		Published:   published,
		Resets:      r.resets.Load(),
		Seed:        cfg.Seed,
		Disconnects: r.cuts.Load(),
		Stalled:     len(stalled),

		StalledDisconnected: stalledClosed,

		PayloadShape:       cfg.PayloadShape,
		KeySpace:           cfg.Keys,
		WSCompression:      cfg.WSCompression,
		WSConnections:      r.wsConns.Load(),
		DeflateConnections: r.deflateConns.Load(),
		Delta:              cfg.Delta,
	}
	wire.report(rep)
	perSub := map[int]int{}
	for _, s := range r.subs {
		perSub[s.topic]++
	}
	for t, n := range perTopic {
		rep.Expected += n * int64(perSub[t])
	}
	// Every reader has ended (wg.Wait), so their fields are safe to read.
	var lastRecv int64
	for _, s := range r.subs {
		want := perTopic[s.topic]
		if got := s.received.Load(); got < want {
			rep.Lost += want - got
			rep.Incomplete++
		}
		rep.Reconnects += s.reconnects
		rep.Failovers += s.failovers
		rep.Delivered += s.delivered.Load()
		rep.Duplicates += s.dups
		rep.OutOfOrder += s.ooo
		rep.DeltaDeliveries += s.deltas
		lastRecv = max(lastRecv, s.lastRecv)
	}
	if cpuErr != nil {
		rep.ServerCPUError = cpuErr.Error()
	} else if n := rep.Delivered - before; n > 0 {
		rep.ServerCPUS = cpu1 - cpu0
		rep.ServerCPUUSPerDelivery = rep.ServerCPUS * 1e6 / float64(n)
	}
	rep.Errors = r.errorsSnapshot()
	rep.ErrorSamples = r.errSamplesSnapshot()
	// The rates are of the measured phase: without what Prime delivered.
	if rep.DurationS > 0 {
		rep.OfferedPerSec = float64(rep.Expected-before) / rep.DurationS
	}
	if lastRecv > 0 {
		if span := time.Unix(0, lastRecv).Sub(r.start).Seconds(); span > 0 {
			rep.DeliveriesPerSec = float64(rep.Delivered-before) / span
		}
	}
	for _, n := range primed {
		rep.Primed += n
	}
	rep.Published += rep.Primed
	all := newHist()
	for i := range r.hists {
		all.Merge(r.hists[i].h)
	}
	rep.LatencyMS = summarize(all)
	rep.ConnectMS = summarize(r.connHist.h)
	if cfg.ChaosDisconnect > 0 || len(cfg.urls) > 1 {
		rm := summarize(r.resumeHist.h)
		rep.ReconnectMS = &rm
	}
	if len(cfg.urls) > 1 {
		rep.Nodes = len(cfg.urls)
		rep.NodeConnected = r.nodeConnected
	}
	req := summarize(r.reqHist.h) // every publisher has ended
	rep.Timeline = r.timeline
	if cfg.Mode == ModeActions {
		rep.Accepted = published
		rep.AcceptMS = &req
		if rep.DurationS > 0 {
			rep.AcceptedPerSec = float64(published) / rep.DurationS
		}
		rep.Histogram = buckets(r.reqHist.h)
	} else {
		rep.PublishMS = &req
		rep.Histogram = buckets(all)
	}
	return rep, nil
}

// newHist records microseconds from 1 µs to 60 s with 3 significant digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
	}
}

func (r *run) complete(perTopic map[int]int64) bool {
	for _, s := range r.subs {
		if s.received.Load() < perTopic[s.topic] {
			return false
		}
	}
	return true
}

// delivered sums the subscribers' delivery counters.
func (r *run) delivered() int64 {
	var n int64
	for _, s := range r.subs {
		n += s.delivered.Load()
	}
	return n
}

// maxInFlight bounds each publisher's concurrent requests.
const maxInFlight = 32

// publish runs the publishers and returns the total and per-topic counts of
// events the server accepted; a topic's sequence numbers go on from its
// count in primed, which the per-topic counts include.
func (r *run) publish(ctx context.Context, primed map[int]int64) (int64, map[int]int64) {
	cfg := r.cfg
	path, want := "/v1/publish", http.StatusOK
	if cfg.Mode == ModeActions {
		path, want = "/v1/actions", http.StatusAccepted
	}
	// Config.defaults has checked the URL.
	base := cfg.URL
	if cfg.PublishURL != "" {
		base = cfg.PublishURL
	}
	ep, _ := newEndpoint(base, path, cfg.TLS, nil)
	pool := &posterPool{e: ep}
	defer pool.closeAll()
	counts := make([]map[int]int64, cfg.Publishers)
	failed := make([]map[int]int64, cfg.Publishers)
	var total atomic.Int64
	var wg sync.WaitGroup
	pad := strings.Repeat("x", cfg.Payload)
	perPub := cfg.Rate / float64(cfg.Publishers)
	end := r.start.Add(cfg.Duration)
	for p := 0; p < cfg.Publishers; p++ {
		counts[p] = map[int]int64{}
		failed[p] = map[int]int64{}
		var topics []int
		for t := p; t < cfg.Topics; t += cfg.Publishers {
			topics = append(topics, t)
			if n := primed[t]; n > 0 {
				counts[p][t] = n
			}
		}
		// Open loop: request i of this publisher is due at start + i ×
		// interval whatever became of the earlier ones; maxInFlight workers
		// take the requests in turn, so at most that many are outstanding
		// and a request that waits for a free worker counts its wait.
		var mu sync.Mutex // guards counts[p], failed[p] and the order of sequence numbers
		var ticket atomic.Int64
		interval := time.Duration(float64(time.Second) / perPub)
		// With a fixed count of events, this publisher's share: requests
		// of Batch events, the last one with what remains.
		events := cfg.Events*int64(p+1)/int64(cfg.Publishers) - cfg.Events*int64(p)/int64(cfg.Publishers)
		requests := (events + int64(cfg.Batch) - 1) / int64(cfg.Batch)
		for range maxInFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				timer := time.NewTimer(time.Hour)
				timer.Stop()
				var body, data []byte
				batch := make([]int, 0, cfg.Batch)
				for ctx.Err() == nil {
					i := ticket.Add(1) - 1
					scheduled := r.start.Add(time.Duration(i) * interval)
					size := cfg.Batch
					if cfg.Events > 0 {
						if i >= requests {
							return
						}
						if i == requests-1 {
							size = int(events - i*int64(cfg.Batch))
						}
					} else if scheduled.After(end) {
						return
					}
					if d := time.Until(scheduled); d > 0 {
						timer.Reset(d)
						select {
						case <-timer.C:
						case <-ctx.Done():
							return
						}
					}
					sent := scheduled.UnixNano()
					body, batch = body[:0], batch[:0]
					if cfg.Batch > 1 {
						body = append(body, `{"events":[`...)
					}
					mu.Lock()
					for b := 0; b < size; b++ {
						t := topics[(int(i)*cfg.Batch+b)%len(topics)]
						counts[p][t]++
						batch = append(batch, t)
						if b > 0 {
							body = append(body, ',')
						}
						seq := counts[p][t]
						if cfg.Mode == ModeActions {
							body = fmt.Appendf(body, `{"type":%q,"topic":"%s.%d","payload":{"bseq":%d,"bts":%d,"pad":"%s"}}`, cfg.ActionType, cfg.Prefix, t, seq, sent, pad)
							continue
						}
						data = r.appendData(data[:0], t, seq, sent, pad)
						if r.pubLogs != nil {
							r.pubLogs[t].set(seq, dataHash(r.hashSeed, data))
						}
						body = fmt.Appendf(body, `{"topic":"%s.%d","type":"bench"`, cfg.Prefix, t)
						if cfg.Keys > 0 {
							body = fmt.Appendf(body, `,"key":"k%d"`, seq%int64(cfg.Keys))
						}
						body = append(body, `,"data":`...)
						body = append(body, data...)
						body = append(body, '}')
					}
					mu.Unlock()
					if cfg.Batch > 1 {
						body = append(body, "]}"...)
					}
					if err := pool.postWant(ctx, body, want); err != nil {
						// Not accepted: its sequence numbers will never arrive.
						mu.Lock()
						for _, t := range batch {
							failed[p][t]++
						}
						mu.Unlock()
						if ctx.Err() == nil {
							r.fail(requestErrorKind(cfg.Mode, err))
						}
						continue
					}
					r.reqHist.Lock()
					_ = r.reqHist.h.RecordValue(max(time.Since(scheduled).Microseconds(), 1))
					r.reqHist.Unlock()
					total.Add(int64(len(batch)))
					r.accepted.Add(int64(len(batch)))
				}
			}()
		}
	}
	wg.Wait()
	perTopic := map[int]int64{}
	for p, m := range counts {
		for t, n := range m {
			perTopic[t] += n - failed[p][t]
		}
	}
	return total.Load(), perTopic
}

// appendData appends the data of event seq of topic t, sent at sent (unix
// ns), in the run's payload shape.
func (r *run) appendData(dst []byte, t int, seq, sent int64, pad string) []byte {
	if r.cfg.PayloadShape == ShapeDashboard {
		return appendDashboard(dst, t, r.cfg.Keys, seq, sent)
	}
	dst = append(dst, `{"bseq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"bts":`...)
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, `,"pad":"`...)
	dst = append(dst, pad...)
	return append(dst, `"}`...)
}

// statusError is an answer other than the one a request expects.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("unexpected status %d", e.code) }

// requestErrorKind names a failed publish or action request in the report:
// by status when the server answered (publish_503, action_429), else by
// what went wrong with the connection.
func requestErrorKind(mode string, err error) string {
	what := "publish"
	if mode == ModeActions {
		what = "action"
	}
	var se statusError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s_%d", what, se.code)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return what + "_timeout"
	}
	return what + "_conn"
}

// post sends body and reads the whole answer, so the connection is reused;
// any status but want is an error.
func post(ctx context.Context, client *http.Client, url string, want int, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return statusError{resp.StatusCode}
	}
	return nil
}

// parsePayload extracts the cursor's sequence and bseq and bts from an event
// frame without a full JSON decode: the client's hot path must not be the
// bottleneck. The envelope's "id" comes first and has the form EPOCH-SEQ;
// the data object, with bseq before bts as the publisher writes it, follows.
func parsePayload(b []byte) (cursor uint64, seq, sent int64, ok bool) {
	const wsHead, sseHead = `{"op":"event","id":"`, `data: {"id":"`
	var i int
	switch {
	case len(b) > len(wsHead) && unsafeString(b[:len(wsHead)]) == wsHead:
		i = len(wsHead)
	case len(b) > len(sseHead) && unsafeString(b[:len(sseHead)]) == sseHead:
		i = len(sseHead)
	default:
		if i = keyAt(b, 0, `"id":"`); i < 0 {
			return 0, 0, 0, false
		}
	}
	j := bytes.IndexByte(b[i:], '"')
	if j < 0 {
		return 0, 0, 0, false
	}
	j += i
	k := j
	for k > i && b[k-1] >= '0' && b[k-1] <= '9' {
		k--
	}
	for ; k < j; k++ {
		cursor = cursor*10 + uint64(b[k]-'0')
	}
	// The data object opens with bseq, and '{' is rare: a quick search.
	if i = strings.Index(unsafeString(b[j:]), `{"bseq":`); i >= 0 {
		i += j + len(`{"bseq":`)
	} else if i = keyAt(b, j, `"bseq":`); i < 0 {
		return 0, 0, 0, false
	}
	seq, i, ok = intAt(b, i)
	if !ok {
		return 0, 0, 0, false
	}
	const bts = `,"bts":`
	if i+len(bts) <= len(b) && unsafeString(b[i:i+len(bts)]) == bts {
		i += len(bts) // where the publisher puts it
	} else if i = keyAt(b, j, bts[1:]); i < 0 {
		return 0, 0, 0, false
	}
	sent, _, ok = intAt(b, i)
	return cursor, seq, sent, ok
}

// keyAt returns the index just past the first occurrence of key in b[from:],
// or -1. key starts with a quote, which is everywhere in JSON; the search
// runs on the rest, whose first byte is rarer, and checks the quote after.
func keyAt(b []byte, from int, key string) int {
	for from < len(b) {
		i := strings.Index(unsafeString(b[from:]), key[1:])
		if i < 0 {
			return -1
		}
		i += from
		if i > 0 && b[i-1] == key[0] {
			return i + len(key) - 1
		}
		from = i + 1
	}
	return -1
}

// intAt parses the decimal digits at b[i:] and returns the index after them.
// A send time has 19 digits, so it takes them eight at a time.
func intAt(b []byte, i int) (n int64, end int, ok bool) {
	start := i
	for i+8 <= len(b) {
		v := binary.LittleEndian.Uint64(b[i:])
		if !eightDigits(v) {
			break
		}
		n = n*100_000_000 + int64(parseEight(v))
		i += 8
	}
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	return n, i, i > start
}

// eightDigits reports whether the 8 bytes of v are all ASCII digits.
func eightDigits(v uint64) bool {
	const hi = 0xF0F0F0F0F0F0F0F0
	return (v&hi)|((v+0x0606060606060606)&hi)>>4 == 0x3333333333333333
}

// parseEight converts 8 ASCII digits, loaded little-endian (the first digit
// in the low byte), into their value: pairs, then quads, then all eight.
func parseEight(v uint64) uint64 {
	v = (v & 0x0F0F0F0F0F0F0F0F) * (10<<8 + 1) >> 8
	v = (v & 0x00FF00FF00FF00FF) * (100<<16 + 1) >> 16
	return (v & 0x0000FFFF0000FFFF) * (10000<<32 + 1) >> 32
}

// FormatStatus renders a Status as the one-line live display.
func FormatStatus(s Status) string {
	if s.Phase != "" {
		return fmt.Sprintf("%6.1fs  %-4s  connected %6d  errors %d", s.Elapsed.Seconds(), s.Phase, s.Connected, s.Errors)
	}
	name := s.RateName
	if name == "" {
		name = "deliveries/s"
	}
	return fmt.Sprintf("%6.1fs  connected %6d  %s %10.0f  p50 %8s  p99 %8s  errors %d",
		s.Elapsed.Seconds(), s.Connected, name, s.DeliveriesSec, s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond), s.Errors)
}

// SortedKeys returns m's keys in order, for stable output.
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SortedErrors lists error kinds by name, for stable output.
func SortedErrors(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(out)
	return out
}
