// Package natstest gives tests the machine's NATS with JetStream
// (127.0.0.1:4222, or HERALD_NATS_URL) with a stream name and subject
// prefix of their own, deleted when the test ends. Without NATS a test is
// skipped, except under CI (the CI variable set), where that fails: .ci/run
// starts NATS.
package natstest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var names atomic.Int64

// URL is the NATS server the tests use.
func URL() string {
	if u := os.Getenv("HERALD_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// Conn returns a connection of the test's own and a fresh stream name
// (also usable, lowercased, as a subject prefix). When the test ends, the
// stream, its subscriber-count bucket and the action store's stream and
// bucket are deleted and the connection closed.
func Conn(t testing.TB) (*nats.Conn, string) {
	t.Helper()
	// As natsbroker requires: nothing is buffered while disconnected.
	nc, err := nats.Connect(URL(), nats.Timeout(5*time.Second), nats.ReconnectBufSize(-1))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var js jetstream.JetStream
		if js, err = jetstream.New(nc); err == nil {
			_, err = js.AccountInfo(ctx)
		}
		if err != nil {
			nc.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no NATS with JetStream at %s under CI: %v", URL(), err)
		}
		t.Skipf("no NATS with JetStream at %s: %v", URL(), err)
	}
	name := fmt.Sprintf("HT_%d_%d_%d", os.Getpid(), time.Now().UnixNano(), names.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if js, err := jetstream.New(nc); err == nil {
			_ = js.DeleteStream(ctx, name)
			_ = js.DeleteStream(ctx, name+"_STATE") // the broker's state of keyed topics
			_ = js.DeleteStream(ctx, name+"_PRES")  // its members
			_ = js.DeleteKeyValue(ctx, name+"_NODES")
			_ = js.DeleteKeyValue(ctx, name+"_SUBS")
			_ = js.DeleteStream(ctx, name+"_ACTIONS") // the action store's
			_ = js.DeleteKeyValue(ctx, name+"_ACTIONS")
		}
		nc.Close()
	})
	return nc, name
}

// Subjects is the subject prefix that goes with a stream name from Conn.
func Subjects(stream string) string { return strings.ToLower(stream) }

// BrokerURL returns a --broker URL on a stream of the test's own.
func BrokerURL(t testing.TB) string {
	t.Helper()
	_, name := Conn(t)
	return URL() + "?stream=" + name + "&subjects=" + Subjects(name)
}
