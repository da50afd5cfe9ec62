package heraldtest

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// Stats reads the hub's counters from the node's /v1/stats.
func (n *Node) Stats(t testing.TB) hub.Stats {
	t.Helper()
	resp, err := n.Client.Get(n.URL + "/v1/stats")
	if err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		Hub hub.Stats `json:"hub"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decode /v1/stats: %v", err)
	}
	return st.Hub
}

// Clients reads the number of open clients, of every transport, from the
// node's /v1/stats.
func (n *Node) Clients(t testing.TB) int64 {
	t.Helper()
	var sum int64
	for _, c := range n.Stats(t).Clients {
		sum += c
	}
	return sum
}

var internalListening = regexp.MustCompile(`msg="internal endpoints listening" addr=(\S+)`)

// InternalURL finds the address of the node's internal listener
// (MetricsAddr) in its text log.
func (n *Node) InternalURL(t testing.TB) string {
	t.Helper()
	var addr string
	wait.For(t, 10*time.Second, "the internal listener in the log", func() bool {
		m := internalListening.FindStringSubmatch(n.Logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

// Brokers are the shared brokers that cluster tests run on, each giving
// the URL of a log of the test's own.
var Brokers = []struct {
	Name string
	URL  func(testing.TB) string
}{
	{"redis", redistest.URL},
	{"nats", natstest.BrokerURL},
}

// ForEachBroker runs test once per shared broker, as a subtest named
// after it.
func ForEachBroker(t *testing.T, test func(t *testing.T, broker string)) {
	for _, b := range Brokers {
		t.Run(b.Name, func(t *testing.T) { test(t, b.URL(t)) })
	}
}
