package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// keys returns the keys of a topic's state, in cursor order.
func stateKeys(t *testing.T, b *hub.MemoryBroker, topic string) string {
	t.Helper()
	st, err := b.State(context.Background(), []hub.Pattern{hub.MustPattern(topic)})
	if err != nil {
		t.Fatalf("failed to read state: %v", err)
	}
	ks := make([]string, len(st.Events))
	for i, m := range st.Events {
		ks[i] = m.Key
	}
	return strings.Join(ks, " ")
}

func publishKeyed(t *testing.T, b *hub.MemoryBroker, topic, key, data string) {
	t.Helper()
	d := hub.Draft{Topic: topic, Key: key, Data: []byte(data)}
	if err := d.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(context.Background(), []hub.Draft{d}); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryStateMaxBytes(t *testing.T) {
	data := `"` + strings.Repeat("x", 1000) + `"`
	// Room for three such events, not four. A keyed event counts its
	// envelope three times: twice more for the delta envelopes it may cache.
	b := hub.NewMemoryBroker(hub.MemoryOptions{StateMaxBytes: 3*(3*len(data)+1000) + 500})
	publishKeyed(t, b, "t.1", "a", data)
	publishKeyed(t, b, "t.2", "b", data)
	publishKeyed(t, b, "t.1", "c", data)
	publishKeyed(t, b, "t.1", "a", data) // a is now the most recently written
	publishKeyed(t, b, "t.3", "d", data) // b, on another topic, goes
	if got := stateKeys(t, b, "t.1") + "|" + stateKeys(t, b, "t.2") + "|" + stateKeys(t, b, "t.3"); got != "c a||d" {
		t.Fatalf("state keys = %q, want %q", got, "c a||d")
	}
	// An event larger than the whole bound is delivered, not kept; the
	// key's older value goes, or the state would be wrong.
	publishKeyed(t, b, "t.1", "c", `"`+strings.Repeat("y", 10000)+`"`)
	if got := stateKeys(t, b, "t.1"); got != "a" {
		t.Fatalf("state keys after an oversize event = %q, want a", got)
	}
}

// TestMemoryStateChurn keeps writing and removing keys of many topics
// under small bounds and checks the state against a model.
func TestMemoryStateChurn(t *testing.T) {
	b := hub.NewMemoryBroker(hub.MemoryOptions{StateMaxKeys: 5})
	model := map[string][]string{} // topic -> keys by write, oldest first
	for i := range 3000 {
		topic := fmt.Sprintf("t.%d", i%4)
		key := fmt.Sprintf("k%d", (i*7)%9)
		data := `1`
		if i%3 == 0 {
			data = `null`
		}
		publishKeyed(t, b, topic, key, data)
		ks := model[topic]
		for j, k := range ks {
			if k == key {
				ks = append(ks[:j:j], ks[j+1:]...)
				break
			}
		}
		if data != `null` {
			ks = append(ks, key)
		}
		if len(ks) > 5 {
			ks = ks[1:]
		}
		model[topic] = ks
	}
	for topic, ks := range model {
		if got := stateKeys(t, b, topic); got != strings.Join(ks, " ") {
			t.Fatalf("%s: state keys = %q, want %q", topic, got, strings.Join(ks, " "))
		}
	}
}
