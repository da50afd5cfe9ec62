// Package clienttest subscribes tests to a node with the Go client (the
// client package's own tests cannot use it: it imports the client).
package clienttest

import (
	"context"
	"testing"

	"github.com/heraldpush/herald/client"
)

// Subscribe dials the node at url over transport ("sse" or "ws") and
// subscribes to patterns with o. The client is closed when the test ends.
func Subscribe(ctx context.Context, tb testing.TB, url, transport string, patterns []string, o *client.SubscribeOptions) *client.Subscription {
	tb.Helper()
	c, err := client.Dial(ctx, url, &client.Options{Transport: transport})
	if err != nil {
		tb.Fatalf("failed to dial %s: %v", url, err)
	}
	tb.Cleanup(func() { c.Close() })
	sub, err := c.Subscribe(ctx, patterns, o)
	if err != nil {
		tb.Fatalf("failed to subscribe to %v: %v", patterns, err)
	}
	return sub
}
