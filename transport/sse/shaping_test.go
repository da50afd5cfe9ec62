package sse_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
	"github.com/heraldpush/herald/transport/sse"
)

// TestDeltaStream: delta=fossil gets keyed events after the first of each
// key as deltas, in the envelope on the data line, with the event's id and
// type; applied, they rebuild the published data exactly.
func TestDeltaStream(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	s := f.open([]string{"dash.*"}, nil, "delta", "fossil")
	var want []string
	var msgs []*hub.Message
	for i := range 6 {
		want = append(want, payload.Dashboard(i))
		msgs = append(msgs, publishKeyed(t, f.hub, "dash.1", []string{"a", "b"}[i%2], payload.Dashboard(i)))
	}
	last := map[string][]byte{}
	deltas := 0
	for i := range want {
		fr := s.nextEvent()
		if fr.ID != msgs[i].ID.String() || fr.Event != "message" {
			t.Fatalf("event %d: id %q type %q", i, fr.ID, fr.Event)
		}
		var env struct {
			ID    string           `json:"id"`
			Key   string           `json:"key"`
			Data  *json.RawMessage `json:"data"`
			Delta *string          `json:"delta"`
		}
		if err := json.Unmarshal([]byte(fr.Data), &env); err != nil || env.ID != fr.ID {
			t.Fatalf("event %d: envelope %q: %v", i, fr.Data, err)
		}
		var data []byte
		if env.Delta != nil {
			deltas++
			var err error
			if data, err = delta.Apply(last[env.Key], []byte(*env.Delta)); err != nil {
				t.Fatal(err)
			}
		} else {
			data = *env.Data
		}
		if string(data) != want[i] {
			t.Fatalf("event %d: data differs", i)
		}
		last[env.Key] = data
	}
	if deltas != 4 {
		t.Fatalf("%d deltas, want 4", deltas)
	}
}

// TestConflateStream: conflate=200ms turns a burst into few events ending
// on the latest value of each key.
func TestConflateStream(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	s := f.open([]string{"px"}, nil, "conflate", "200ms")
	for i := range 200 {
		publishKeyed(t, f.hub, "px", []string{"AAPL", "MSFT"}[i%2], fmt.Sprint(i))
	}
	got := map[string]string{}
	n := 0
	for got["AAPL"] != "198" || got["MSFT"] != "199" {
		var env struct {
			Key  string          `json:"key"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(s.nextEvent().Data), &env); err != nil {
			t.Fatal(err)
		}
		n++
		got[env.Key] = string(env.Data)
	}
	if n > 20 {
		t.Fatalf("%d events for a 200-event burst: not conflated", n)
	}
}

// TestShapingInvalid: a delta other than fossil, a conflate interval out of
// range, or either given twice, is 400 invalid_request.
func TestShapingInvalid(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	for _, extra := range [][]string{
		{"delta", "xdelta"}, {"delta", ""}, {"delta", "fossil", "delta", "fossil"},
		{"conflate", "10ms"}, {"conflate", "2m"}, {"conflate", "1"}, {"conflate", "1s", "conflate", "1s"},
	} {
		resp, err := f.get(context.Background(), f.url([]string{"a"}, extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidRequest)
		resp.Body.Close()
	}
}
