package brokertest

import (
	"bytes"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// testKey checks that an event's key survives the log: what Publish
// returns, what Read and Latest return and what is delivered all carry it,
// and an event without one stays without one, with the v1 envelope.
func (s *suite) testKey(t *testing.T) {
	b, r := s.open(t, Options{})
	ctx := ctxT(t)
	keyed := func(topic, key, data string) hub.Draft {
		d := draft(t, topic, data)
		d.Key = key
		return d
	}
	var want []*hub.Message
	want = append(want, publish(t, ctx, b, keyed("key.a", "user:1", `{"n":1}`))...)
	want = append(want, publish(t, ctx, b, draft(t, "key.a", `2`))...)
	want = append(want, publish(t, ctx, b,
		keyed("key.a", "user:2", `3`), draft(t, "key.b", `4`), keyed("key.b", "k.x_y-Z", `null`))...)
	wantKeys := []string{"user:1", "", "user:2", "", "k.x_y-Z"}
	for i, m := range want {
		if m.Key != wantKeys[i] {
			t.Fatalf("Publish returned event %d with key %q, want %q", i, m.Key, wantKeys[i])
		}
		hasKey := bytes.Contains(m.Envelope(), []byte(`"key":`))
		if hasKey != (wantKeys[i] != "") {
			t.Fatalf("event %d envelope %s: key present %v, want %v", i, m.Envelope(), hasKey, !hasKey)
		}
	}
	check := func(what string, got []*hub.Message, want []*hub.Message) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s returned %d events, want %d", what, len(got), len(want))
		}
		for i := range got {
			sameEvent(t, got[i], want[i])
			if !bytes.Equal(got[i].Envelope(), want[i].Envelope()) {
				t.Errorf("%s: envelope %s, want %s", what, got[i].Envelope(), want[i].Envelope())
			}
		}
	}
	check("Read", readAll(t, ctx, b, 0, all, 100, 0), want)
	latest, err := b.Latest(ctx, "key.b", 10)
	if err != nil {
		t.Fatalf("failed to get latest: %v", err)
	}
	check("Latest", latest, want[3:])
	check("deliver", r.waitN(t, len(want)), want)
	r.check(t)
}
