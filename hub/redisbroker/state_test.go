package redisbroker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

// stateFixture is a broker on the machine's Redis with the given state
// bounds, a publish of one keyed event, and a reader of each topic's keys
// in write order ("k1 k2|k3" for two topics).
func stateFixture(t *testing.T, o redisbroker.Options) (pub func(topic, key, data string), keys func(topics ...string) string, bytes func()) {
	rdb, prefix := redistest.Client(t)
	o.Client, o.Prefix = rdb, prefix
	b, err := redisbroker.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	pub = func(topic, key, data string) {
		t.Helper()
		d := hub.Draft{Topic: topic, Key: key, Data: []byte(data)}
		if err := d.Normalize(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
			t.Fatal(err)
		}
	}
	keys = func(topics ...string) string {
		t.Helper()
		var out []string
		for _, topic := range topics {
			st, err := b.State(ctx, []hub.Pattern{hub.MustPattern(topic)})
			if err != nil {
				t.Fatal(err)
			}
			var ks []string
			for _, m := range st.Events {
				ks = append(ks, m.Key)
			}
			out = append(out, strings.Join(ks, " "))
		}
		return strings.Join(out, "|")
	}
	// bytes checks that the state's byte count is what its entries count
	// ("seq micros type data", topic, key and the overhead of 64).
	bytes = func() {
		t.Helper()
		n, err := rdb.Get(ctx, "{"+prefix+"}:state:bytes").Int()
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.State(ctx, []hub.Pattern{hub.MustPattern(">")})
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, m := range st.Events {
			v := fmt.Sprintf("%d %d %s %s", m.ID.Seq, m.Time.UnixMicro(), m.Type, m.Data)
			want += len(v) + len(m.Topic) + len(m.Key) + 64
		}
		if n != want {
			t.Fatalf("state bytes = %d, want %d", n, want)
		}
	}
	return pub, keys, bytes
}

// TestStateLazyOrderKeys: an update leaves a key's score in its topic's
// order where it was, so the key bound must find the stale scores and
// re-score them. Keys updated in another order than they were first
// written go in the order of their last writes, however many are stale.
func TestStateLazyOrderKeys(t *testing.T) {
	pub, keys, _ := stateFixture(t, redisbroker.Options{StateMaxKeys: 4})
	for _, k := range []string{"a", "b", "c", "d"} {
		pub("t", k, `1`)
	}
	for _, k := range []string{"c", "a", "d", "b"} { // every score is stale now
		pub("t", k, `2`)
	}
	steps := []struct{ key, want string }{
		{"e", "a d b e"}, // c, first written third, was written least recently
		{"f", "d b e f"}, // a
		{"d", "b e f d"}, // an update of a re-scored key
		{"g", "e f d g"}, // b, whose score was repaired by the first eviction
		{"h", "f d g h"}, // e
		{"i", "d g h i"}, // f
		{"j", "g h i j"}, // d, stale again since its update
		{"g", "h i j g"}, // update
		{"h", "i j g h"}, // update
		{"k", "j g h k"}, // i
		{"l", "g h k l"}, // j
		{"m", "h k l m"}, // g: stale, re-scored, yet the oldest
		{"n", "k l m n"}, // h
		{"o", "l m n o"}, // k
		{"p", "m n o p"}, // l
		{"q", "n o p q"}, // m
		{"r", "o p q r"}, // n
		{"s", "p q r s"}, // o
		{"t", "q r s t"}, // p
		{"u", "r s t u"}, // q
		{"v", "s t u v"}, // r
		{"w", "t u v w"}, // s
		{"x", "u v w x"}, // t
		{"y", "v w x y"}, // u
		{"z", "w x y z"}, // v
		{"w", "x y z w"}, // update
		{"0", "y z w 0"}, // x
		{"1", "z w 0 1"}, // y
		{"2", "w 0 1 2"}, // z
		{"3", "0 1 2 3"}, // w: stale, re-scored, yet the oldest
	}
	for i, s := range steps {
		pub("t", s.key, `3`)
		if got := keys("t"); got != s.want {
			t.Fatalf("step %d (%s): state keys = %q, want %q", i, s.key, got, s.want)
		}
	}
}

// TestStateLazyOrderBytes: the byte bound across topics finds the least
// recently written key of any topic through stale scores too, and the byte
// count follows updates that change a value's size and those that do not.
func TestStateLazyOrderBytes(t *testing.T) {
	data := `"` + strings.Repeat("x", 1000) + `"`
	// Each key counts about 1100 bytes: room for three, not four.
	pub, keys, bytes := stateFixture(t, redisbroker.Options{StateMaxBytes: 3500})
	pub("t.1", "a", data)
	pub("t.2", "b", data)
	pub("t.3", "c", data)
	pub("t.2", "b", data) // same size: b's score and the byte count stay
	pub("t.1", "a", data)
	bytes()
	pub("t.3", "d", data) // c goes, the only key whose score is not stale
	if got := keys("t.1", "t.2", "t.3"); got != "a|b|d" {
		t.Fatalf("state keys = %q, want %q", got, "a|b|d")
	}
	pub("t.2", "e", data) // b (written before a) goes, after both are re-scored
	if got := keys("t.1", "t.2", "t.3"); got != "a|e|d" {
		t.Fatalf("state keys = %q, want %q", got, "a|e|d")
	}
	// A smaller value of d makes room: nothing goes for the next key.
	pub("t.3", "d", `1`)
	bytes()
	pub("t.1", "f", data)
	if got := keys("t.1", "t.2", "t.3"); got != "a f|e|d" {
		t.Fatalf("state keys = %q, want %q", got, "a f|e|d")
	}
	// d grows back: the oldest of all goes, a, not d, whose score is stale.
	pub("t.3", "d", data)
	if got := keys("t.1", "t.2", "t.3"); got != "f|e|d" {
		t.Fatalf("state keys = %q, want %q", got, "f|e|d")
	}
	bytes()
}

// TestStateLazyOrderRepairBound: one eviction re-scores at most 256 stale
// scores. Past that it drops the key at the front as it is: the bound on
// keys holds, and the publish stays short, at the price of an approximate
// order until later evictions repair the rest.
func TestStateLazyOrderRepairBound(t *testing.T) {
	const n = 300
	pub, keys, bytes := stateFixture(t, redisbroker.Options{StateMaxKeys: n})
	for i := range n {
		pub("rb.a", fmt.Sprint("k", i), "1")
	}
	for i := range n { // every score is stale now, k0's first
		pub("rb.a", fmt.Sprint("k", i), "2")
	}
	pub("rb.a", "new", "3")
	got := strings.Fields(keys("rb.a"))
	if len(got) != n {
		t.Fatalf("%d keys, want %d", len(got), n)
	}
	// k0..k255 were re-scored; k256, stale, went as it stood.
	for _, k := range got {
		if k == "k256" {
			t.Fatalf("k256 kept; want it dropped after 256 re-scores: %v", got)
		}
	}
	bytes()
}
