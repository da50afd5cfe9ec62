package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	topic, body, err := getTopicResource(ctx, "presence", args, stdout, presenceUsage)
	if err != nil {
		return err
	}
	var p struct {
		ID      string            `json:"id"`
		Members []json.RawMessage `json:"members"`
		Clients int               `json:"clients"`
		Users   int               `json:"users"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("failed to read the presence of %s: %w", topic, err)
	}
	lines := make([]string, len(p.Members))
	for i, m := range p.Members {
		lines[i] = string(m)
	}
	if err := printLines(stdout, lines); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "presence of %s at %s: %d clients, %d users\n", topic, p.ID, p.Clients, p.Users)
	return nil
}
