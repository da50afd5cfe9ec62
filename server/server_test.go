package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/server"
)

// TestEmbedCustomAction runs a server in the process with an action
// handler of its own: an action submitted over HTTP runs in the handler,
// and its result arrives on an SSE stream.
func TestEmbedCustomAction(t *testing.T) {
	srv, err := server.New(server.Config{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
		ActionHandlers: map[string]action.Handler{
			"greet": action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
				var p struct{ Name string }
				if err := json.Unmarshal(c.Payload, &p); err != nil {
					return nil, err
				}
				return json.Marshal(map[string]string{"greeting": "hello, " + p.Name})
			}),
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	base := "http://" + srv.Addr()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?topic=greetings", nil)
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/events: %v %v", stream, err)
	}
	defer stream.Body.Close()
	lines := bufio.NewReader(stream.Body)
	// The stream is open once its first line has come: the action's event
	// cannot be published before the subscription.
	if _, err := lines.ReadString('\n'); err != nil {
		t.Fatalf("reading the SSE stream: %v", err)
	}

	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/actions",
		strings.NewReader(`{"type":"greet","topic":"greetings","payload":{"name":"Ada"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/actions: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/actions: status %d, body %s", resp.StatusCode, body)
	}
	var accepted struct{ ID string }
	if err := json.Unmarshal(body, &accepted); err != nil || accepted.ID == "" {
		t.Fatalf("POST /v1/actions: body %s", body)
	}

	for {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the SSE stream before the result came: %v", err)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var e struct {
			Topic string
			Type  string
			Data  json.RawMessage
		}
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("SSE data %q: %v", data, err)
		}
		want := `{"action_id":"` + accepted.ID + `","type":"greet","status":"succeeded","result":{"greeting":"hello, Ada"}}`
		if e.Topic != "greetings" || e.Type != "action.succeeded" || string(e.Data) != want {
			t.Fatalf("SSE event %+v %s, want action.succeeded with %s", e, e.Data, want)
		}
		break
	}

	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	// The shutdown ended the stream.
	if _, err := io.Copy(io.Discard, stream.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("the stream ended with %v", err)
	}
}

// TestNewRefusesConfig checks that a Config New refuses is a
// *ConfigError, with nothing started (goleak checks that).
func TestNewRefusesConfig(t *testing.T) {
	for name, c := range map[string]server.Config{
		"broker":    {Broker: "kafka://k:9092"},
		"auth":      {Auth: "jwt"},
		"tls":       {TLSCert: "/nonexistent/cert.pem", TLSKey: "/nonexistent/key.pem"},
		"upstream":  {ActionUpstreams: []server.Upstream{{URL: "ftp://x"}}},
		"redis url": {Broker: "redis://h:notaport/0"},
		"handler":   {ActionHandlers: map[string]action.Handler{"greet": nil}},
		"pprof":     {Pprof: true},
		"h2c":       {H2C: true, TLSCert: "c.pem", TLSKey: "k.pem"},
		"lease":     {ActionLease: 100 * time.Millisecond},
		"jwt":       {JWTSecret: "0123456789abcdef0123456789abcdef"},
	} {
		c.Addr, c.Logger = "127.0.0.1:0", slog.New(slog.DiscardHandler)
		srv, err := server.New(c)
		if !server.IsConfigError(err) {
			if srv != nil {
				_ = srv.Shutdown(context.Background())
			}
			t.Errorf("%s: New returned %v, want a *ConfigError", name, err)
		}
	}
}

// TestShutdownBeforeServe stops a server that never served: its port is
// free again, and a later Serve returns at once.
func TestShutdownBeforeServe(t *testing.T) {
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	addr := srv.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := srv.Serve(ctx); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	again, err := server.New(server.Config{Addr: addr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New on the address of a server shut down: %v", err)
	}
	if err := again.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
