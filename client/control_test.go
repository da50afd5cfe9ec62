package client

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

// TestServerUnsubscribe: the control API's unsubscribe reaches the
// subscription on both transports: with a pattern left it goes on, and
// once none is left it ends with the error "unsubscribed", without
// subscribing again.
func TestServerUnsubscribe(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{Auth: "jwt", JWTSecret: secret, APIKey: "backend-key-0123456789"})
			ctx := testCtx(t)
			backend := dial(t, node.URL, Options{APIKey: "backend-key-0123456789"})
			c := dial(t, node.URL, Options{Transport: tr, Token: token(t, "ann", time.Hour)})
			s, err := c.Subscribe(ctx, []string{"open.a", "open.b"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := backend.Publish(ctx, "open.a", "", 1); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s) // connected
			unsubscribe := func(topic string) {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, node.URL+"/v1/unsubscribe",
					strings.NewReader(`{"user":"ann","topics":["`+topic+`"]}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-API-Key", "backend-key-0123456789")
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("unsubscribe %s: %v %v", topic, resp, err)
				}
				resp.Body.Close()
			}
			unsubscribe("open.a")
			if _, err := backend.Publish(ctx, "open.a", "", 2); err != nil {
				t.Fatal(err)
			}
			if _, err := backend.Publish(ctx, "open.b", "", 3); err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); e.Topic != "open.b" {
				t.Fatalf("after unsubscribing open.a got %s %s, want open.b", e.Topic, e.Data)
			}
			unsubscribe("open.b")
			for range s.C() {
			}
			var herr *Error
			if err := s.Err(); !errors.As(err, &herr) || herr.Code != "unsubscribed" {
				t.Fatalf("the subscription ended with %v, want unsubscribed", err)
			}
		})
	}
}
