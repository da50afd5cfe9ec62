package server_test

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

func TestServeFlow(t *testing.T) {
	in := start(t, server.Config{ShutdownTimeout: 5 * time.Second})

	status, body := in.Post(t, "/v1/publish", `{"topic":"orders.42","type":"order.created","data":{"total":12.5}}`)
	if status != http.StatusOK {
		t.Fatalf("publish: status %d, body %s", status, body)
	}
	var one struct{ ID string }
	if err := json.Unmarshal(body, &one); err != nil || one.ID == "" {
		t.Fatalf("publish body %s: %v", body, err)
	}
	status, body = in.Post(t, "/v1/publish", `{"events":[{"topic":"orders.42","data":1},{"topic":"orders.7","data":2}]}`)
	if status != http.StatusOK {
		t.Fatalf("batch publish: status %d, body %s", status, body)
	}

	if got := strings.Join(in.HistoryData(t, "orders.42"), " "); got != `{"total":12.5} 1` {
		t.Errorf("orders.42 history data = %s", got)
	}
	status, body = in.Get(t, "/v1/topics/orders.42/history?after="+one.ID)
	if status != http.StatusOK || !strings.Contains(string(body), `"data":1`) || strings.Contains(string(body), "12.5") {
		t.Errorf("history after %s: status %d, body %s", one.ID, status, body)
	}
	status, body = in.Get(t, "/v1/topics")
	if status != http.StatusOK || !strings.Contains(string(body), `{"topic":"orders.7","subscribers":0,"events":1}`) {
		t.Errorf("topics: status %d, body %s", status, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if status, body := in.Get(t, p); status != http.StatusOK {
			t.Errorf("%s: status %d, body %s", p, status, body)
		}
	}
	if !strings.Contains(in.Logs.String(), "msg=listening") || !strings.Contains(in.Logs.String(), in.URL[len("http://"):]) {
		t.Errorf("the listening address is not logged:\n%s", in.Logs)
	}

	err, took := in.Stop(t, 5*time.Second+2*time.Second)
	if err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	t.Logf("shutdown took %v", took)
	if _, err := net.DialTimeout("tcp", in.URL[len("http://"):], time.Second); err == nil {
		t.Errorf("the server still accepts connections after Serve returned")
	}
}
