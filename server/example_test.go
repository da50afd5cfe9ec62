package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/server"
)

// A Go program runs Herald with an action handler of its own: POST
// /v1/actions {"type":"shout","topic":"t","payload":"hi"} publishes the
// result, "HI", on topic t. The server runs until the program is
// interrupted.
func ExampleServer() {
	shout := action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		var s string
		if err := json.Unmarshal(c.Payload, &s); err != nil {
			return nil, err
		}
		return json.Marshal(strings.ToUpper(s))
	})
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", ActionHandlers: map[string]action.Handler{"shout": shout},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	stop() // so that the example ends at once; a program leaves this out
	fmt.Println(srv.Serve(ctx))
	// Output: <nil>
}
