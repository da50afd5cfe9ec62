package hub

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldpush/herald/delta"
)

// FuzzDeltaEnvelope: for any two data of one topic and key written in turn
// to a connection that asked for deltas, the second envelope is valid JSON
// and, when it carries a delta, applying the delta (as a JSON string) to the
// first data gives the second exactly.
func FuzzDeltaEnvelope(f *testing.F) {
	f.Add(`{"a":1,"b":"some text that stays the same"}`, `{"a":2,"b":"some text that stays the same"}`)
	f.Add(`"héllo wörld, ünïcode everywhere ☃☃☃☃☃☃☃☃"`, `"héllo wörld, ünïcode everywhere ☃☃☃☃☃☃☃☄"`)
	f.Add(`[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]`, `[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,17]`)
	f.Add(`"\u0000\n\t\"quoted\" and \\ backslashes, repeated: \"quoted\""`, `"\u0000\n\t\"quoted\" and \\ backslashes, repeated: \"quotes\""`)
	f.Add(`null`, `{"x":null}`)
	f.Fuzz(func(t *testing.T, first, second string) {
		var ds [2]Draft
		for i, s := range []string{first, second} {
			ds[i] = Draft{Topic: "t", Key: "k", Data: json.RawMessage(s)}
			if ds[i].Normalize() != nil {
				return
			}
		}
		var b Bases
		var prev []byte
		for i, d := range ds {
			m := NewMessage(Event{ID: Cursor{Epoch: "e", Seq: uint64(i + 1)}, Topic: d.Topic, Type: "message", Key: d.Key, Data: d.Data, Time: time.Unix(0, 0)})
			env, isDelta := b.Envelope(Item{Msg: m, Delta: true})
			var e struct {
				Data  json.RawMessage `json:"data"`
				Delta *string         `json:"delta"`
			}
			if err := json.Unmarshal(env, &e); err != nil {
				t.Fatalf("envelope %q is not JSON: %v", env, err)
			}
			if isDelta != (e.Delta != nil) || (isDelta && i == 0) {
				t.Fatalf("event %d: isDelta %v, envelope %q", i, isDelta, env)
			}
			got := []byte(e.Data)
			if isDelta {
				var err error
				if got, err = delta.Apply(prev, []byte(*e.Delta)); err != nil {
					t.Fatalf("delta of %q to %q does not apply: %v", prev, m.Data, err)
				}
			}
			if string(got) != string(m.Data) {
				t.Fatalf("event %d: got data %q, want %q", i, got, m.Data)
			}
			prev = got
		}
	})
}
