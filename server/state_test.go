package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/server"
)

// TestStateBoundsReachBroker checks that the state's flags reach every
// broker.
func TestStateBoundsReachBroker(t *testing.T) {
	for _, b := range []struct {
		name   string
		broker func(testing.TB) string
	}{
		{"memory", func(testing.TB) string { return "memory" }},
		{"redis", redistest.URL},
		{"nats", natstest.BrokerURL},
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
}
