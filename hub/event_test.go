package hub_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/hub"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []hub.Cursor{
		{Epoch: "abc", Seq: 0},
		{Epoch: "x", Seq: 1},
		{Epoch: "A_b9", Seq: 42},
		{Epoch: hub.NewEpoch(), Seq: math.MaxUint64},
		{Epoch: strings.Repeat("e", 107), Seq: math.MaxUint64}, // 128 bytes in all
	} {
		s := c.String()
		if got := string(c.AppendText([]byte("pre"))); got != "pre"+s {
			t.Errorf("AppendText = %q, want %q", got, "pre"+s)
		}
		got, err := hub.ParseCursor(s)
		if err != nil || got != c {
			t.Errorf("ParseCursor(%q) = %+v, %v; want %+v", s, got, err, c)
		}
	}
}

func TestParseCursorMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"-",
		"abc",
		"abc-",
		"-12",
		"abc-x",
		"abc-1x",
		"abc-+1",
		"abc--1",
		"abc- 1",
		"abc-1 ",
		"abc-0x10",
		"abc-18446744073709551616", // overflows uint64
		"ab.c-1",
		"ab-c-1", // the epoch may not contain the separator
		"ab c-1",
		"é-1",
		"ab\x00-1",
		strings.Repeat("e", 127) + "-1", // 129 bytes
	} {
		if c, err := hub.ParseCursor(s); !errors.Is(err, hub.ErrBadCursor) {
			t.Errorf("ParseCursor(%q) = %+v, %v; want ErrBadCursor", s, c, err)
		}
	}
}

func TestNewEpoch(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		e := hub.NewEpoch()
		if len(e) != 10 {
			t.Fatalf("epoch %q is not 10 characters", e)
		}
		for _, c := range e {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567", c) {
				t.Fatalf("epoch %q has %q outside lowercase base32", e, c)
			}
		}
		if seen[e] {
			t.Fatalf("epoch %q drawn twice", e)
		}
		seen[e] = true
		if _, err := hub.ParseCursor(hub.Cursor{Epoch: e, Seq: 7}.String()); err != nil {
			t.Fatalf("cursor with epoch %q does not parse: %v", e, err)
		}
	}
}

func TestDraftNormalize(t *testing.T) {
	cases := []struct {
		name    string
		in      hub.Draft
		typ     string
		data    string
		wantErr error
	}{
		{"default type", hub.Draft{Topic: "a", Data: []byte(`1`)}, "message", "1", nil},
		{"own type", hub.Draft{Topic: "a", Type: "order.created:v2_x-y", Data: []byte(`1`)}, "order.created:v2_x-y", "1", nil},
		{"64-byte type", hub.Draft{Topic: "a", Type: strings.Repeat("t", 64)}, strings.Repeat("t", 64), "null", nil},
		{"missing data", hub.Draft{Topic: "a"}, "message", "null", nil},
		{"blank data", hub.Draft{Topic: "a", Data: []byte(" \r\n\t ")}, "message", "null", nil},
		{"compacted", hub.Draft{Topic: "a", Data: []byte("{ \"a\" : [1,\n 2 ],\r\n\t\"b\": \"x  y\\n\" }\n")}, "message", `{"a":[1,2],"b":"x  y\n"}`, nil},
		{"scalar with spaces", hub.Draft{Topic: "a", Data: []byte("  \"s\"  ")}, "message", `"s"`, nil},
		{"json null", hub.Draft{Topic: "a", Data: []byte("null")}, "message", "null", nil},
		{"unicode kept", hub.Draft{Topic: "a", Data: []byte(`"é\u2028"`)}, "message", `"é\u2028"`, nil},
		{"reserved type", hub.Draft{Topic: "a", Type: "herald.reset"}, "", "", hub.ErrInvalidType},
		{"reserved prefix alone", hub.Draft{Topic: "a", Type: "herald."}, "", "", hub.ErrInvalidType},
		{"reserved type in capitals", hub.Draft{Topic: "a", Type: "HERALD.reset"}, "", "", hub.ErrInvalidType},
		{"reserved type capitalized", hub.Draft{Topic: "a", Type: "Herald.x"}, "", "", hub.ErrInvalidType},
		{"reserved type mixed case", hub.Draft{Topic: "a", Type: "hErAlD.join"}, "", "", hub.ErrInvalidType},
		{"prefix without the dot", hub.Draft{Topic: "a", Type: "HERALDx"}, "HERALDx", "null", nil},
		{"65-byte type", hub.Draft{Topic: "a", Type: strings.Repeat("t", 65)}, "", "", hub.ErrInvalidType},
		{"type with space", hub.Draft{Topic: "a", Type: "a b"}, "", "", hub.ErrInvalidType},
		{"type with slash", hub.Draft{Topic: "a", Type: "a/b"}, "", "", hub.ErrInvalidType},
		{"type with quote", hub.Draft{Topic: "a", Type: `a"b`}, "", "", hub.ErrInvalidType},
		{"type non-ascii", hub.Draft{Topic: "a", Type: "é"}, "", "", hub.ErrInvalidType},
		{"bad topic", hub.Draft{Topic: "a..b"}, "", "", hub.ErrInvalidTopic},
		{"pattern as topic", hub.Draft{Topic: "a.*"}, "", "", hub.ErrInvalidTopic},
		{"empty topic", hub.Draft{}, "", "", hub.ErrInvalidTopic},
		{"truncated object", hub.Draft{Topic: "a", Data: []byte(`{"a":`)}, "", "", hub.ErrInvalidData},
		{"two values", hub.Draft{Topic: "a", Data: []byte(`1 2`)}, "", "", hub.ErrInvalidData},
		{"bare word", hub.Draft{Topic: "a", Data: []byte(`hello`)}, "", "", hub.ErrInvalidData},
		{"vertical tab is not JSON whitespace", hub.Draft{Topic: "a", Data: []byte("\v")}, "", "", hub.ErrInvalidData},
		{"trailing comma", hub.Draft{Topic: "a", Data: []byte(`[1,]`)}, "", "", hub.ErrInvalidData},
		{"raw newline in string", hub.Draft{Topic: "a", Data: []byte("\"a\nb\"")}, "", "", hub.ErrInvalidData},
		// JSON text is UTF-8 (RFC 8259), and a WebSocket text frame that is
		// not makes browsers fail the connection (RFC 6455 8.1).
		{"invalid UTF-8 in string", hub.Draft{Topic: "a", Data: []byte("\"\xff\xfe\"")}, "", "", hub.ErrInvalidData},
		{"truncated UTF-8", hub.Draft{Topic: "a", Data: []byte("[\"\xc3\"]")}, "", "", hub.ErrInvalidData},
		{"key", hub.Draft{Topic: "a", Key: "user:42.x_y-Z9"}, "message", "null", nil},
		{"128-byte key", hub.Draft{Topic: "a", Key: strings.Repeat("k", 128)}, "message", "null", nil},
		{"129-byte key", hub.Draft{Topic: "a", Key: strings.Repeat("k", 129)}, "", "", hub.ErrInvalidKey},
		{"key with space", hub.Draft{Topic: "a", Key: "a b"}, "", "", hub.ErrInvalidKey},
		{"key with slash", hub.Draft{Topic: "a", Key: "a/b"}, "", "", hub.ErrInvalidKey},
		{"key with quote", hub.Draft{Topic: "a", Key: `a"b`}, "", "", hub.ErrInvalidKey},
		{"key non-ascii", hub.Draft{Topic: "a", Key: "é"}, "", "", hub.ErrInvalidKey},
	}
	for _, c := range cases {
		d := c.in
		err := d.Normalize()
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("%s: Normalize = %v, want %v", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Normalize = %v", c.name, err)
			continue
		}
		if d.Type != c.typ || string(d.Data) != c.data {
			t.Errorf("%s: got type %q data %s, want %q %s", c.name, d.Type, d.Data, c.typ, c.data)
		}
		if bytes.ContainsAny(d.Data, "\r\n") || !json.Valid(d.Data) || !utf8.Valid(d.Data) {
			t.Errorf("%s: data %q is not one line of UTF-8 JSON", c.name, d.Data)
		}
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	loc := time.FixedZone("X", 5*3600+1800)
	ev := hub.Event{
		ID:    hub.Cursor{Epoch: "abcdefghij", Seq: 12345},
		Topic: "orders.42",
		Type:  "order.created",
		Data:  json.RawMessage(`{"n":[1,2,{"s":"x\"y"}]}`),
		Time:  time.Date(2026, 11, 21, 10, 11, 12, 123456789, loc),
	}
	b := ev.AppendJSON(nil)
	want := `{"id":"abcdefghij-12345","topic":"orders.42","type":"order.created","data":{"n":[1,2,{"s":"x\"y"}]},"time":"2026-11-21T04:41:12.123456789Z"}`
	if string(b) != want {
		t.Fatalf("AppendJSON =\n%s\nwant\n%s", b, want)
	}
	if m, err := json.Marshal(ev); err != nil || !bytes.Equal(m, b) {
		t.Fatalf("json.Marshal = %s, %v", m, err)
	}
	var back hub.Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("failed to unmarshal: %v", err)
	}
	if back.ID != ev.ID || back.Topic != ev.Topic || back.Type != ev.Type ||
		!bytes.Equal(back.Data, ev.Data) || !back.Time.Equal(ev.Time) {
		t.Fatalf("round trip = %+v, want %+v", back, ev)
	}
	if again := back.AppendJSON(nil); !bytes.Equal(again, b) {
		t.Fatalf("re-encoded = %s", again)
	}
	// Missing data encodes as null.
	ev.Data = nil
	if b := ev.AppendJSON(nil); !bytes.Contains(b, []byte(`"data":null,`)) || !json.Valid(b) {
		t.Fatalf("nil data encodes as %s", b)
	}
	// A key sits between type and data; without one the envelope is v1's.
	ev.Key = "user:42"
	b = ev.AppendJSON(nil)
	if !bytes.Contains(b, []byte(`"type":"order.created","key":"user:42","data":null,`)) || !json.Valid(b) {
		t.Fatalf("keyed event encodes as %s", b)
	}
	back = hub.Event{}
	if err := json.Unmarshal(b, &back); err != nil || back.Key != "user:42" {
		t.Fatalf("keyed round trip = %+v, %v", back, err)
	}
	if m := hub.NewMessage(ev); !bytes.Equal(m.Envelope(), b) || m.Key != "user:42" || string(m.Data) != "null" {
		t.Fatalf("NewMessage envelope %s, key %q, data %s", m.Envelope(), m.Key, m.Data)
	}
	// Decoding checks the cursor.
	var e hub.Event
	if err := json.Unmarshal([]byte(`{"id":"nope","topic":"a"}`), &e); !errors.Is(err, hub.ErrBadCursor) {
		t.Fatalf("bad id: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"id":`), &e); err == nil {
		t.Fatal("truncated JSON decoded")
	}
}

var testFormat = hub.NewFormat(func(dst []byte, m *hub.Message) []byte {
	formatCalls.Add(1)
	return append(dst, "F:"...)
}, 1, "!")

var formatCalls atomic.Int64

func TestMessageFrame(t *testing.T) {
	m := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "e", Seq: 1}, Topic: "a", Type: "t", Data: []byte(`1`), Time: time.Unix(0, 0)})
	if !bytes.Equal(m.Envelope(), m.AppendJSON(nil)) {
		t.Fatalf("envelope %s", m.Envelope())
	}
	formatCalls.Store(0)
	var wg sync.WaitGroup
	frames := make([]hub.Frame, 8)
	for i := range frames {
		wg.Add(1)
		go func() { defer wg.Done(); frames[i] = m.Frame(testFormat) }()
	}
	wg.Wait()
	for _, f := range frames {
		if got := f.AppendTo(nil); string(got) != "F:"+string(m.Envelope()[1:])+"!" || len(got) != f.Len() {
			t.Fatalf("frame = %s (Len %d)", got, f.Len())
		}
	}
	calls := formatCalls.Load()
	again := m.Frame(testFormat)
	if formatCalls.Load() != calls || &again.Head[0] != &m.Frame(testFormat).Head[0] {
		t.Fatal("a cached frame head was encoded again")
	}
	// The body is the envelope itself, not a copy of it.
	if &again.Body[0] != &m.Envelope()[1] {
		t.Fatal("the frame's body is a copy of the envelope")
	}
}

// TestMessageOneCopy checks that a message holds one copy of the event's
// bytes: its Data lies inside the envelope, and it keeps no reference to the
// data it was given.
func TestMessageOneCopy(t *testing.T) {
	data := []byte(`{"x":"` + strings.Repeat("y", 1000) + `"}`)
	m := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "e", Seq: 1}, Topic: "a", Type: "t", Data: data, Time: time.Unix(0, 0)})
	if !bytes.Equal(m.Data, data) {
		t.Fatalf("data = %s", m.Data)
	}
	env := m.Envelope()
	start := bytes.Index(env, data)
	if start < 0 || &m.Data[0] != &env[start] {
		t.Fatal("the message's data is not the copy inside its envelope")
	}
	if cap(m.Data) != len(m.Data) {
		t.Fatalf("data has spare capacity %d: an append would write into the envelope", cap(m.Data)-len(m.Data))
	}
	if cap(env) > len(env)+128 {
		t.Errorf("envelope of %d bytes allocated with capacity %d", len(env), cap(env))
	}
	empty := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: "e", Seq: 2}, Topic: "a", Type: "t", Time: time.Unix(0, 0)})
	if string(empty.Data) != "null" {
		t.Errorf("data of an event without data = %q, want null", empty.Data)
	}
}

// TestDraftNormalizeTwice checks that a second Normalize, which skips
// compacting data it compacted itself, still validates everything else and
// compacts data that was replaced in between.
func TestDraftSetKey(t *testing.T) {
	var d hub.Draft
	if err := d.SetKey(nil); err != nil || d.Key != "" {
		t.Fatalf("SetKey(nil) = %v, key %q", err, d.Key)
	}
	empty := ""
	if err := d.SetKey(&empty); !errors.Is(err, hub.ErrInvalidKey) {
		t.Fatalf("SetKey(\"\") = %v, want ErrInvalidKey", err)
	}
	k := "a"
	if err := d.SetKey(&k); err != nil || d.Key != "a" {
		t.Fatalf("SetKey(a) = %v, key %q", err, d.Key)
	}
}

func TestDraftNormalizeTwice(t *testing.T) {
	d := hub.Draft{Topic: "a", Data: []byte(`{ "x" : 1 }`)}
	if err := d.Normalize(); err != nil {
		t.Fatal(err)
	}
	if err := d.Normalize(); err != nil || string(d.Data) != `{"x":1}` {
		t.Fatalf("second Normalize: %v, data %s", err, d.Data)
	}
	bad := d
	bad.Topic = "a..b"
	if err := bad.Normalize(); !errors.Is(err, hub.ErrInvalidTopic) {
		t.Errorf("topic changed after Normalize: %v, want %v", err, hub.ErrInvalidTopic)
	}
	bad = d
	bad.Type = "herald.x"
	if err := bad.Normalize(); !errors.Is(err, hub.ErrInvalidType) {
		t.Errorf("type changed after Normalize: %v, want %v", err, hub.ErrInvalidType)
	}
	bad = d
	bad.Data = []byte(`{"x":`)
	if err := bad.Normalize(); !errors.Is(err, hub.ErrInvalidData) {
		t.Errorf("data replaced after Normalize: %v, want %v", err, hub.ErrInvalidData)
	}
	again := d
	again.Data = []byte("[ 1 ,\n2 ]")
	if err := again.Normalize(); err != nil || string(again.Data) != `[1,2]` {
		t.Errorf("data replaced after Normalize: %v, data %s", err, again.Data)
	}
}
