package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
)

// frames builds event envelopes as the server writes them, and for a
// delta the same envelope with "delta" in place of "data".
type frames struct {
	t   *testing.T
	seq uint64
}

func (f *frames) full(topic, key, data string) []byte {
	f.seq++
	e := hub.Event{ID: hub.Cursor{Epoch: "e1", Seq: f.seq}, Topic: topic, Type: "board", Key: key,
		Data: json.RawMessage(data), Time: time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)}
	return e.AppendJSON(nil)
}

func (f *frames) withDelta(topic, key, base, data string) []byte {
	f.t.Helper()
	d, ok := delta.Create([]byte(base), []byte(data))
	if !ok {
		f.t.Fatalf("no delta from %.40s to %.40s", base, data)
	}
	full := string(f.full(topic, key, data))
	ds, _ := json.Marshal(string(d))
	i, j := strings.Index(full, `"data":`), strings.LastIndex(full, `,"time":"`)
	return []byte(full[:i] + `"delta":` + string(ds) + full[j:])
}

// feed hands one envelope to the subscription as its reader would.
func feed(s *Subscription, frame []byte) error {
	e, err := parseEnvelope(frame[1:])
	if err != nil {
		return err
	}
	return s.event(context.Background(), e)
}

// Deltas are delivered as full data; each topic and key keeps its own
// base; an event already delivered (a replay) still becomes the next
// base; and a delta that does not apply (another base, no base, garbage,
// a base from before a reset) delivers nothing
// and ends the connection with an error, so that the next one resumes.
func TestDeltaBases(t *testing.T) {
	s := benchSubscription()
	s.opts.Delta = true
	s.msgs = make(chan Message, 64)
	f := &frames{t: t}
	want := func(frame []byte, data string) {
		t.Helper()
		if err := feed(s, frame); err != nil {
			t.Fatalf("event %s: %v", frame, err)
		}
		select {
		case m := <-s.msgs:
			if string(m.Event.Data) != data {
				t.Fatalf("data %.60s…, want %.60s…", m.Event.Data, data)
			}
		default:
			t.Fatalf("event %.100s delivered nothing", frame)
		}
	}
	want(f.full("dash.ops", "main", payload.Dashboard(1)), payload.Dashboard(1))
	want(f.withDelta("dash.ops", "main", payload.Dashboard(1), payload.Dashboard(2)), payload.Dashboard(2))
	want(f.full("dash.ops", "side", payload.Dashboard(100)), payload.Dashboard(100))
	want(f.withDelta("dash.ops", "main", payload.Dashboard(2), payload.Dashboard(3)), payload.Dashboard(3))
	want(f.withDelta("dash.ops", "side", payload.Dashboard(100), payload.Dashboard(101)), payload.Dashboard(101))
	want(f.full("dash.dev", "main", payload.Dashboard(7)), payload.Dashboard(7))
	want(f.withDelta("dash.dev", "main", payload.Dashboard(7), payload.Dashboard(8)), payload.Dashboard(8))

	// A replayed event (already delivered) is not delivered again but is
	// the next delta's base.
	s.last = hub.Cursor{Epoch: "e1", Seq: f.seq + 1}
	if err := feed(s, f.full("dash.ops", "main", payload.Dashboard(50))); err != nil || len(s.msgs) != 0 {
		t.Fatalf("replayed event: %v, %d delivered", err, len(s.msgs))
	}
	want(f.withDelta("dash.ops", "main", payload.Dashboard(50), payload.Dashboard(51)), payload.Dashboard(51))

	refused := map[string][]byte{
		"another base": f.withDelta("dash.ops", "main", strings.ReplaceAll(payload.Dashboard(51), "région", "zone"), payload.Dashboard(52)),
		"no base":      f.withDelta("dash.ops", "other", payload.Dashboard(1), payload.Dashboard(2)),
		"garbage":      []byte(`{"id":"e1-999","topic":"dash.ops","type":"board","key":"main","delta":"3\n3@~~~~~,0;","time":"2026-12-06T13:00:00Z"}`),
	}
	for name, frame := range refused {
		t.Run(name, func(t *testing.T) {
			before := s.last
			if err := feed(s, frame); err == nil {
				t.Fatal("accepted")
			}
			if len(s.msgs) != 0 || s.last != before {
				t.Errorf("%d delivered, resume point %v (was %v)", len(s.msgs), s.last, before)
			}
		})
	}

	// After a reset every key comes whole: a delta on an old base is refused.
	if err := s.reset(context.Background(), "e1-500", "history_gone", []string{"dash.ops"}); err != nil {
		t.Fatal(err)
	}
	<-s.msgs
	if err := feed(s, f.withDelta("dash.ops", "main", payload.Dashboard(51), payload.Dashboard(52))); err == nil {
		t.Error("a delta after a reset was applied to the base from before it")
	}
}

// The bases stay within their bounds, forgetting keys (whose deltas then
// restart the connection) rather than growing.
func TestDeltaBasesBounded(t *testing.T) {
	s := benchSubscription()
	s.opts.Delta = true
	s.msgs = make(chan Message, 1)
	f := &frames{t: t}
	count := func() (n, bytes int) {
		for _, v := range s.bases {
			n, bytes = n+1, bytes+len(v)
		}
		return n, bytes
	}
	for i := range maxBases + 100 {
		if err := feed(s, f.full("t", fmt.Sprintf("k%d", i), `{"v":1}`)); err != nil {
			t.Fatal(err)
		}
		<-s.msgs
	}
	if n, _ := count(); n > maxBases {
		t.Errorf("%d bases kept, bound %d", n, maxBases)
	}
	big := `"` + strings.Repeat("x", 900<<10) + `"`
	for i := range 100 {
		if err := feed(s, f.full("t", fmt.Sprintf("big%d", i), big)); err != nil {
			t.Fatal(err)
		}
		<-s.msgs
	}
	if _, b := count(); b != s.baseBytes || b > maxBaseBytes {
		t.Errorf("bases hold %d bytes (counted %d), bound %d", b, s.baseBytes, maxBaseBytes)
	}
}
