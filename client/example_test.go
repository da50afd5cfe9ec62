package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/server"
)

// startServer runs a Herald server for an example on a free port of
// loopback and returns its URL and a function that stops it. A program
// connects to a server that runs elsewhere instead.
func startServer() (url string, stop func()) {
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return "http://" + srv.Addr(), func() { cancel(); <-done }
}

// Subscribe to a pattern, publish, and read the event.
func Example() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, url, nil) // WebSocket; &client.Options{Transport: "sse"} for SSE
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, []string{"orders.*"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Publish(ctx, "orders.42", "order.created", map[string]any{"total": 99.5}); err != nil {
		log.Fatal(err)
	}
	for m, err := range sub.All() {
		if err != nil {
			log.Fatal(err)
		}
		if m.Kind == client.KindEvent {
			fmt.Println(m.Event.Topic, m.Event.Type, string(m.Event.Data))
			break
		}
	}
	// Output: orders.42 order.created {"total":99.5}
}

// A subscription with state starts with each key's latest event, then a
// synced marker, then live events.
func ExampleClient_Subscribe_state() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, url, &client.Options{Transport: "sse"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, p := range []struct{ key, status string }{{"bob", "away"}, {"ann", "online"}, {"bob", "online"}} {
		if _, err := c.Publish(ctx, "status", "", p.status, client.WithKey(p.key)); err != nil {
			log.Fatal(err)
		}
	}
	sub, err := c.Subscribe(ctx, []string{"status"}, &client.SubscribeOptions{State: true})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for m := range sub.C() {
		if m.Kind == client.KindSynced {
			fmt.Println("synced")
			break
		}
		fmt.Println(m.Event.Key, string(m.Event.Data))
	}
	// Output:
	// ann "online"
	// bob "online"
	// synced
}

// An action's result, from its result event. The built-in action type
// "echo" returns its payload.
func ExampleClient_Action() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := c.Action(ctx, "echo", "todo.list", map[string]string{"add": "milk"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	r, err := h.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Status, string(r.Result))
	// Output: succeeded {"add":"milk"}
}

// A batch is published all or nothing, in order.
func ExampleClient_PublishBatch() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ids, err := c.PublishBatch(ctx, []client.Draft{
		{Topic: "dash.cpu", Data: json.RawMessage(`{"load":0.42}`)},
		{Topic: "dash.mem", Data: json.RawMessage(`{"used":0.61}`)},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ids), "cursors")
	// Output: 2 cursors
}

// A client of a server with authentication: a function supplies fresh
// tokens for every connection and request, and before a WebSocket's token
// expires.
func ExampleOptions_tokenFunc() {
	mint := func(ctx context.Context) (string, error) {
		return "a JWT from your identity provider", nil
	}
	c, err := client.Dial(context.Background(), "https://push.example.com", &client.Options{TokenFunc: mint})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
