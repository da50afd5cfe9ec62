package httpapi_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// stateOf reads a topic's state.
func (s *server) stateOf(t *testing.T, topic string) (hub.Cursor, []hub.Event) {
	t.Helper()
	r := s.do(t, http.MethodGet, "/v1/topics/"+topic+"/state", noContentType, "")
	if r.status != http.StatusOK {
		t.Fatalf("state of %s: status %d, body %s", topic, r.status, r.body)
	}
	var out struct {
		ID     string
		Events []hub.Event
	}
	decodeStrict(t, r.body, &out)
	id, err := hub.ParseCursor(out.ID)
	if err != nil || out.Events == nil {
		t.Fatalf("state of %s: want a cursor and an array of events, got %s", topic, r.body)
	}
	return id, out.Events
}

func TestState(t *testing.T) {
	s := newServer(t, serverOptions{retain: 3})
	if id, evs := s.stateOf(t, "room.1"); len(evs) != 0 || id.Seq != 0 {
		t.Fatalf("state of a new topic: %d events at %s", len(evs), id)
	}
	s.publish(t, `{"topic":"room.1","key":"alice","data":{"x":1}}`)
	s.publish(t, `{"events":[{"topic":"room.1","key":"bob","data":2},{"topic":"room.1","data":"no key"},{"topic":"room.2","key":"alice","data":3}]}`)
	s.publish(t, `{"topic":"room.1","key":"carol","data":4}`)
	s.publish(t, `{"topic":"room.1","key":"bob","data":null}`)
	last := s.mustPublish(t, "other", "", "1")
	id, evs := s.stateOf(t, "room.1")
	if id.String() != last {
		t.Errorf("state at %s, want the last position %s", id, last)
	}
	// alice's event has left the history (3 events retained); her state stays.
	if len(evs) != 2 || evs[0].Key != "alice" || string(evs[0].Data) != `{"x":1}` || evs[1].Key != "carol" || evs[1].Topic != "room.1" {
		t.Fatalf("state = %+v, want alice then carol", evs)
	}
	assertError(t, s.do(t, http.MethodGet, "/v1/topics/a..b/state", noContentType, ""), http.StatusBadRequest, "invalid_topic")
	assertError(t, s.do(t, http.MethodGet, "/v1/topics/a.*/state", noContentType, ""), http.StatusBadRequest, "invalid_topic")
	assertError(t, s.do(t, http.MethodPost, "/v1/topics/room.1/state", "application/json", "{}"), http.StatusMethodNotAllowed, "method_not_allowed")
}

// TestStateExact reads the state while a publisher changes it: the
// snapshot and the events after its id give the state that is left.
func TestStateExact(t *testing.T) {
	s := newServer(t, serverOptions{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 300 {
			data := fmt.Sprint(i)
			if i%4 == 3 {
				data = "null"
			}
			r := s.publish(t, fmt.Sprintf(`{"topic":"doc.1","key":"k%d","data":%s}`, i%11, data))
			if r.status != http.StatusOK {
				t.Errorf("publish: %d %s", r.status, r.body)
				return
			}
		}
	}()
	var snaps []map[string]hub.Event
	var ids []hub.Cursor
	for range 5 {
		id, evs := s.stateOf(t, "doc.1")
		m := map[string]hub.Event{}
		for _, e := range evs {
			m[e.Key] = e
		}
		snaps, ids = append(snaps, m), append(ids, id)
	}
	wg.Wait()
	_, final := s.stateOf(t, "doc.1")
	for i, cur := range snaps {
		for _, e := range s.history(t, "doc.1", "?limit=1000&after="+ids[i].String()) {
			if string(e.Data) == "null" {
				delete(cur, e.Key)
			} else {
				cur[e.Key] = e
			}
		}
		if len(cur) != len(final) {
			t.Fatalf("snapshot at %s and the events after it give %d keys, the state has %d", ids[i], len(cur), len(final))
		}
		for _, e := range final {
			if c, ok := cur[e.Key]; !ok || c.ID != e.ID {
				t.Fatalf("snapshot at %s: key %s is %v, the state has %s", ids[i], e.Key, c.ID, e.ID)
			}
		}
	}
}
