package main

import (
	"context"
	"fmt"
	"io"

	"github.com/heraldpush/herald/client"
)

const presenceUsage = `Usage: herald presence [flags] TOPIC

Prints the members of a topic's presence, one member object per line
({"client","user","info"}, NDJSON), in the order they joined, and on stderr
the position the list is exact at and how many connections and users it
holds: "herald sub --presence-events --since" that position follows every
join and leave after it.

Exit status: 0 printed, 1 an error (message on stderr), 2 bad flags.

Flags:
`

// runPresence runs "herald presence": GET /v1/topics/{topic}/presence.
func runPresence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var p *client.Presence
	topic, err := topicCommand(ctx, "presence", args, stdout, presenceUsage, func(ctx context.Context, c *client.Client, topic string) (err error) {
		p, err = c.Presence(ctx, topic)
		return err
	})
	if err != nil {
		return err
	}
	lines := make([]string, len(p.Members))
	for i, m := range p.Members {
		lines[i] = string(m.Raw)
	}
	if err := printLines(stdout, lines); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "presence of %s at %s: %d clients, %d users\n", topic, p.Cursor, p.Clients, p.Users)
	return nil
}
