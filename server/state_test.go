package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/server"
)

// TestStateBoundsReachBroker checks that the state's flags reach the
// broker that keeps the state (memory and Redis), and that a broker that
// keeps none answers 501 not_implemented (NATS).
func TestStateBoundsReachBroker(t *testing.T) {
	for _, b := range []struct {
		name   string
		broker func(testing.TB) string
	}{
		{"memory", func(testing.TB) string { return "memory" }},
		{"redis", redistest.URL},
	} {
		t.Run(b.name, func(t *testing.T) {
			in := start(t, server.Config{Broker: b.broker(t), StateMaxKeys: 2})
			for _, k := range []string{"a", "b", "c"} {
				if status, body := in.Post(t, "/v1/publish", `{"topic":"doc.1","key":"`+k+`","data":1}`); status != http.StatusOK {
					t.Fatalf("publish: %d %s", status, body)
				}
			}
			status, body := in.Get(t, "/v1/topics/doc.1/state")
			if status != http.StatusOK || strings.Contains(string(body), `"key":"a"`) ||
				!strings.Contains(string(body), `"key":"b"`) || !strings.Contains(string(body), `"key":"c"`) {
				t.Fatalf("state with --state-max-keys 2: %d %s, want keys b and c", status, body)
			}
		})
	}
	t.Run("nats", func(t *testing.T) {
		in := start(t, server.Config{Broker: natstest.BrokerURL(t)})
		status, body := in.Get(t, "/v1/topics/doc.1/state")
		if status != http.StatusNotImplemented || !strings.Contains(string(body), `"code":"not_implemented"`) {
			t.Fatalf("state on NATS: %d %s, want 501 not_implemented", status, body)
		}
	})
}
