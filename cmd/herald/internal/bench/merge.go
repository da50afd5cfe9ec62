package bench

import "fmt"

// A run too big for one process (a process holds at most ~20k sockets) is
// split over several bench processes with Config.Shard, often against the
// several nodes of a cluster. Merge adds their reports up into one, and
// NodeSample carries what only the script that ran the nodes knows: each
// node's process and resident memory.

// NodeSample is one node of a cluster run, as the script that started it
// measured it: VmRSS before any subscriber connected, while the
// connections were held (before any node was killed), and the peak
// (VmHWM) at the end.
type NodeSample struct {
	URL         string `json:"url"`
	PID         int    `json:"pid"`
	Killed      bool   `json:"killed,omitempty"`
	RSSKBBefore int64  `json:"rss_kb_before"`
	RSSKBHeld   int64  `json:"rss_kb_held"`
	RSSKBPeak   int64  `json:"rss_kb_peak,omitempty"`
}

// NodeReport is a NodeSample with the subscribers that connected to the
// node first, from the shards' reports, and its RSS growth per connection.
type NodeReport struct {
	NodeSample
	Connected       int   `json:"connected"`
	RSSPerConnBytes int64 `json:"rss_per_conn_bytes"`
}

// ClusterReport is the sum of the shards' reports of one run.
//
// Counts add up. Rates add up too: the shards run at the same time, each
// over its own span. Latency distributions cannot be added from their
// summaries: P50 and P90 are the shards' figures weighted by the
// deliveries each measured, P99, P99.9 and Max the highest of the shards'
// (an upper bound of the whole run's).
type ClusterReport struct {
	Mode             string           `json:"mode"` // always fanout, the one mode that merges
	Shards           int              `json:"shards"`
	Nodes            int              `json:"nodes"`
	Transport        string           `json:"transport"`
	Subscribers      int              `json:"subscribers"`
	Connected        int              `json:"connected"`
	DurationS        float64          `json:"duration_s"` // the longest shard's
	Published        int64            `json:"published"`
	Expected         int64            `json:"expected_deliveries"`
	Delivered        int64            `json:"delivered"`
	OfferedPerSec    float64          `json:"offered_per_sec"`
	DeliveriesPerSec float64          `json:"deliveries_per_sec"`
	Lost             int64            `json:"lost"`
	Duplicates       int64            `json:"duplicates"`
	OutOfOrder       int64            `json:"out_of_order"`
	Resets           int64            `json:"resets"`
	Incomplete       int              `json:"incomplete_subscribers"`
	Reconnects       int64            `json:"reconnects"`
	Failovers        int64            `json:"failovers"`
	LatencyMS        Latency          `json:"latency_ms"`
	ConnectMS        Latency          `json:"connect_ms"`
	ReconnectMS      *Latency         `json:"reconnect_ms,omitempty"`
	Errors           map[string]int64 `json:"errors"`
	NodeConnected    []int            `json:"node_connected,omitempty"`
	NodeReports      []NodeReport     `json:"node_reports,omitempty"`
	// RSSPerConnBytes is the growth of the nodes' VmRSS from before the
	// connections to while they were held, summed over the nodes, per
	// connection held; 0 without node samples.
	RSSPerConnBytes int64 `json:"rss_per_conn_bytes,omitempty"`
}

// Merge adds up the fan-out reports of the shards of one run, and the
// nodes' samples (in the order of the run's node list), if any.
func Merge(shards []*Report, nodes []NodeSample) (*ClusterReport, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("no reports to merge")
	}
	c := &ClusterReport{Mode: ModeFanout, Shards: len(shards), Errors: map[string]int64{}}
	var w50, w90, wc50, wc90 float64
	var weight, cweight float64
	for i, r := range shards {
		if r.Mode != ModeFanout {
			return nil, fmt.Errorf("report %d is of mode %q: only fan-out reports merge", i+1, r.Mode)
		}
		if c.Transport == "" {
			c.Transport = r.Transport
		} else if c.Transport != r.Transport {
			c.Transport = "mixed"
		}
		c.Nodes = max(c.Nodes, r.Nodes, 1)
		c.Subscribers += r.Subscribers
		c.Connected += r.Connected
		c.DurationS = max(c.DurationS, r.DurationS)
		c.Published += r.Published
		c.Expected += r.Expected
		c.Delivered += r.Delivered
		c.OfferedPerSec += r.OfferedPerSec
		c.DeliveriesPerSec += r.DeliveriesPerSec
		c.Lost += r.Lost
		c.Duplicates += r.Duplicates
		c.OutOfOrder += r.OutOfOrder
		c.Resets += r.Resets
		c.Incomplete += r.Incomplete
		c.Reconnects += r.Reconnects
		c.Failovers += r.Failovers
		for k, n := range r.Errors {
			c.Errors[k] += n
		}
		for j, n := range r.NodeConnected {
			for len(c.NodeConnected) <= j {
				c.NodeConnected = append(c.NodeConnected, 0)
			}
			c.NodeConnected[j] += n
		}
		d := float64(r.Delivered)
		weight += d
		w50 += d * r.LatencyMS.P50
		w90 += d * r.LatencyMS.P90
		upper(&c.LatencyMS, r.LatencyMS)
		n := float64(r.Connected)
		cweight += n
		wc50 += n * r.ConnectMS.P50
		wc90 += n * r.ConnectMS.P90
		upper(&c.ConnectMS, r.ConnectMS)
		if r.ReconnectMS != nil {
			if c.ReconnectMS == nil {
				c.ReconnectMS = &Latency{}
			}
			// Shards' reconnect counts differ; the highest is the honest figure.
			c.ReconnectMS.P50 = max(c.ReconnectMS.P50, r.ReconnectMS.P50)
			c.ReconnectMS.P90 = max(c.ReconnectMS.P90, r.ReconnectMS.P90)
			upper(c.ReconnectMS, *r.ReconnectMS)
		}
	}
	if weight > 0 {
		c.LatencyMS.P50, c.LatencyMS.P90 = w50/weight, w90/weight
	}
	if cweight > 0 {
		c.ConnectMS.P50, c.ConnectMS.P90 = wc50/cweight, wc90/cweight
	}
	if len(nodes) > 0 {
		if len(c.NodeConnected) == 0 && len(nodes) == 1 {
			c.NodeConnected = []int{c.Connected}
		}
		if len(nodes) != len(c.NodeConnected) {
			return nil, fmt.Errorf("%d node samples for reports of %d nodes", len(nodes), len(c.NodeConnected))
		}
		var grown int64
		var held int
		for i, s := range nodes {
			nr := NodeReport{NodeSample: s, Connected: c.NodeConnected[i]}
			if nr.Connected > 0 && s.RSSKBHeld > 0 {
				nr.RSSPerConnBytes = (s.RSSKBHeld - s.RSSKBBefore) * 1024 / int64(nr.Connected)
				grown += s.RSSKBHeld - s.RSSKBBefore
				held += nr.Connected
			}
			c.NodeReports = append(c.NodeReports, nr)
		}
		if held > 0 {
			c.RSSPerConnBytes = grown * 1024 / int64(held)
		}
	}
	return c, nil
}

// upper raises dst's high quantiles and maximum to src's where src's are higher.
func upper(dst *Latency, src Latency) {
	dst.P99 = max(dst.P99, src.P99)
	dst.P999 = max(dst.P999, src.P999)
	dst.Max = max(dst.Max, src.Max)
}

// Exact reports whether the merged run delivered every event once and in order.
func (c *ClusterReport) Exact() bool {
	return c.Lost == 0 && c.Duplicates == 0 && c.OutOfOrder == 0 && c.Resets == 0
}
