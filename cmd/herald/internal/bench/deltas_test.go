package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/wsframe"
)

// deltaRun is a run with deltas on, one topic and one subscriber, whose
// publish log has the data of bseq 1…n as appendDashboard writes them.
func deltaRun(t *testing.T, keys, n int) (*run, *subscriber, func(seq int64) []byte) {
	t.Helper()
	r := &run{cfg: Config{Delta: true, Keys: keys, Topics: 1}, errs: map[string]int64{}}
	for i := range r.hists {
		r.hists[i].h = newHist()
	}
	r.pubLogs = make([]publishLog, 1)
	r.hashSeed = maphash.MakeSeed()
	r.texts = newTextCache(r.hashSeed)
	data := func(seq int64) []byte { return appendDashboard(nil, 0, keys, seq, 1_000_000+seq) }
	for seq := int64(1); seq <= int64(n); seq++ {
		r.pubLogs[0].set(seq, dataHash(r.hashSeed, data(seq)))
	}
	s := &subscriber{}
	r.subs = []*subscriber{s}
	return r, s, data
}

// eventFrame is an event message as the server writes it, with data or,
// if d is not nil, a delta (a JSON string) in its place.
func eventFrame(seq int64, key string, data, d []byte) []byte {
	head := fmt.Sprintf(`{"op":"event","id":"ep0-%d","topic":"bench.0","type":"bench","key":%q,`, seq, key)
	var msg []byte
	if d != nil {
		q, _ := json.Marshal(string(d)) // escapes quotes, newlines and <, >, & as \u00XX
		msg = fmt.Appendf(nil, `%s"delta":%s,"time":"2026-12-06T00:00:00Z"}`, head, q)
	} else {
		msg = fmt.Appendf(nil, `%s"data":%s,"time":"2026-12-06T00:00:00Z"}`, head, data)
	}
	return serverFrame(true, wsframe.OpText, msg, false)
}

// readFrames has a delta subscriber read stream to its end (a close frame
// it appends).
func readFrames(t *testing.T, r *run, s *subscriber, stream []byte) {
	t.Helper()
	c, srv := framePair(t)
	stream = append(stream, serverFrame(true, wsframe.OpClose, []byte{0x03, 0xe8}, false)...)
	written := writeAsync(srv, stream)
	w := &wsSub{r: r, s: s, c: c, ds: newDeltaState(r.texts)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.read(ctx); err == nil || errorKind(err) != "ws_close_1000" {
		t.Fatalf("read ended with %v, want the close", err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

// Whole data first, then deltas from it, per key: every event is rebuilt
// and counted once, deltas as deltas, and the payload is what the frames
// would have been with whole data.
func TestDeltaEvents(t *testing.T) {
	const keys, n = 3, 30
	r, s, data := deltaRun(t, keys, n)
	var stream []byte
	var wantPayload int64
	last := map[string][]byte{}
	for seq := int64(1); seq <= n; seq++ {
		key := fmt.Sprintf("k%d", seq%keys)
		d := data(seq)
		whole := eventFrame(seq, key, d, nil)
		wantPayload += int64(len(whole))
		if base := last[key]; base != nil {
			dd, ok := delta.Create(base, d)
			if !ok {
				t.Fatalf("event %d: no delta", seq)
			}
			stream = append(stream, eventFrame(seq, key, nil, dd)...)
		} else {
			stream = append(stream, whole...)
		}
		last[key] = d
	}
	readFrames(t, r, s, stream)
	if len(r.errs) != 0 {
		t.Fatalf("errors %v %v", r.errs, r.errSamples)
	}
	if got := s.received.Load(); got != n {
		t.Fatalf("received %d of %d", got, n)
	}
	if s.deltas != n-keys {
		t.Fatalf("%d deltas, want %d", s.deltas, n-keys)
	}
	if got := s.payload.Load(); got != wantPayload {
		t.Fatalf("payload %d bytes, want %d (the frames with whole data)", got, wantPayload)
	}
	if len(stream) > int(wantPayload)/5 {
		t.Fatalf("the deltas took %d bytes of %d", len(stream), wantPayload)
	}
}

// Every way a delta can go wrong is a delta_mismatch, and the event is not
// counted as received; the subscriber goes on with the next.
func TestDeltaMismatches(t *testing.T) {
	const keys = 2
	r, s, data := deltaRun(t, keys, 40)
	d1, d3 := data(1), data(3) // key k1, updates 0 and 1
	good, _ := delta.Create(d1, d3)
	wrongTarget, _ := delta.Create(d1, bytes.Replace(d3, []byte(`"environment":"production"`), []byte(`"environment":"staging!!!"`), 1))
	otherBase, _ := delta.Create(data(2), data(4)) // made for k0's data
	cases := []struct {
		name  string
		frame []byte
	}{
		{"no base", eventFrame(5, "k9", nil, good)},
		{"other target", eventFrame(3, "k1", nil, wrongTarget)},
		{"other base", eventFrame(3, "k1", nil, otherBase)},
		{"malformed", eventFrame(3, "k1", nil, []byte("3\n3:a"))},
		{"truncated", eventFrame(3, "k1", nil, good[:len(good)/2])},
		{"not published", eventFrame(99, "k1", data(99), nil)},
		{"whole data altered", eventFrame(5, "k1", bytes.Replace(data(5), []byte(`"refresh_s":5`), []byte(`"refresh_s":6`), 1), nil)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.errs, r.errSamples = map[string]int64{}, nil
			*s = subscriber{}
			var stream []byte
			stream = append(stream, eventFrame(1, "k1", d1, nil)...)
			stream = append(stream, tc.frame...)
			readFrames(t, r, s, stream)
			if r.errs["delta_mismatch"] != 1 || len(r.errs) != 1 {
				t.Fatalf("errors %v, want one delta_mismatch", r.errs)
			}
			if r.errSamples["delta_mismatch"] == "" {
				t.Fatal("no sample of the mismatch")
			}
			if got := s.received.Load(); got != 1 {
				t.Fatalf("received %d, want only the first event", got)
			}
		})
	}
}

// After a reset the server starts every key over with whole data: a delta
// from before it no longer applies.
func TestDeltaReset(t *testing.T) {
	r, s, data := deltaRun(t, 1, 5)
	d12, _ := delta.Create(data(1), data(2))
	var stream []byte
	stream = append(stream, eventFrame(1, "k0", data(1), nil)...)
	stream = append(stream, serverFrame(true, wsframe.OpText, []byte(`{"op":"reset","topic":"bench.0"}`), false)...)
	stream = append(stream, eventFrame(2, "k0", nil, d12)...)     // no base any more
	stream = append(stream, eventFrame(3, "k0", data(3), nil)...) // whole: a new base
	d34, _ := delta.Create(data(3), data(4))
	stream = append(stream, eventFrame(4, "k0", nil, d34)...)
	readFrames(t, r, s, stream)
	if r.errs["delta_mismatch"] != 1 || r.resets.Load() != 1 {
		t.Fatalf("errors %v, resets %d", r.errs, r.resets.Load())
	}
	if got := s.received.Load(); got != 3 || s.deltas != 1 {
		t.Fatalf("received %d (want 1, 3, 4), deltas %d", got, s.deltas)
	}
}

// Events without a key pass through a delta subscriber as through any.
func TestDeltaUnkeyed(t *testing.T) {
	r, s, _ := deltaRun(t, 1, 1)
	msg := []byte(`{"op":"event","id":"ep0-1","topic":"bench.0","type":"bench","data":{"bseq":1,"bts":5},"time":"2026-12-06T00:00:00Z"}`)
	readFrames(t, r, s, serverFrame(true, wsframe.OpText, msg, false))
	if s.received.Load() != 1 || len(r.errs) != 0 || s.payload.Load() != frameSize(len(msg)) {
		t.Fatalf("received %d, errors %v, payload %d", s.received.Load(), r.errs, s.payload.Load())
	}
}

func TestUnquoteJSON(t *testing.T) {
	for _, in := range []string{"", "plain", "quote \" back \\ slash / tab \t nl \n cr \r", "\x01\x1f ctl", "é ü 日本 😀", "<>&", "\u2028\u2029"} {
		q, _ := json.Marshal(in)
		got, n, err := unquoteJSON(nil, q[1:])
		if err != nil || string(got) != in || n != len(q)-2 {
			t.Errorf("%q: got %q, n %d of %d, err %v", in, got, n, len(q)-2, err)
		}
	}
	for _, in := range []string{`abc`, `a\`, `a\x"`, `\u12"`, "a\x01\"", `\ud83d\ude00"`} {
		got, _, err := unquoteJSON(nil, []byte(in))
		var want string
		jerr := json.Unmarshal([]byte(`"`+in), &want)
		if (err == nil) != (jerr == nil) || err == nil && string(got) != want {
			t.Errorf("%q: got %q err %v; encoding/json %q err %v", in, got, err, want, jerr)
		}
	}
}

func FuzzUnquoteJSON(f *testing.F) {
	for _, s := range []string{`abc"`, `\n\"\\"`, `\u00e9"`, `\ud83d\ude00"`, `\ud83d"`, `a\`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		got, n, err := unquoteJSON(nil, s)
		if err != nil {
			return
		}
		if n >= len(s) || s[n] != '"' {
			t.Fatalf("%q: ended at %d, not at a quote", s, n)
		}
		var want string
		if err := json.Unmarshal(append([]byte{'"'}, s[:n+1]...), &want); err != nil {
			t.Fatalf("%q: unquoted to %q, but encoding/json refuses the string: %v", s, got, err)
		}
		// encoding/json turns bytes that are not UTF-8 into U+FFFD; the
		// client keeps them as they came.
		if utf8.Valid(s[:n]) && string(got) != want {
			t.Fatalf("%q: got %q, encoding/json %q", s, got, want)
		}
	})
}

// A malformed delta from the server, however broken, is an error, never
// a panic of the client.
func FuzzDeltaKeyed(f *testing.F) {
	base := appendDashboard(nil, 0, 1, 1, 1)
	good, _ := delta.Create(base, appendDashboard(nil, 0, 1, 2, 2))
	f.Add(good)
	f.Add([]byte("3\n3:a"))
	f.Add([]byte("9999999\n9@99999,"))
	f.Fuzz(func(t *testing.T, d []byte) {
		ds := newDeltaState(newTextCache(maphash.MakeSeed()))
		ds.keep([]byte("k"), ds.tc.intern(base, false))
		q, _ := json.Marshal(string(d))
		msg := fmt.Appendf(nil, `{"op":"event","id":"e-1","topic":"t","type":"x","key":"k","delta":%s,"time":"z"}`, q)
		_, _, _ = ds.keyed(msg)
	})
}

// The publish log answers readers while its one writer grows it.
func TestPublishLog(t *testing.T) {
	var l publishLog
	const n = 20_000
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(0); ; seq = (seq + 7) % n {
				select {
				case <-done:
					return
				default:
				}
				if h := l.get(seq); h != 0 && h != uint64(seq)*2+1 {
					t.Errorf("seq %d: hash %d", seq, h)
					return
				}
			}
		}()
	}
	for seq := int64(1); seq < n; seq++ {
		l.set(seq, uint64(seq)*2)
	}
	close(done)
	wg.Wait()
	for _, seq := range []int64{1, 4095, 4096, n - 1} {
		if l.get(seq) != uint64(seq)*2+1 {
			t.Fatalf("seq %d: %d", seq, l.get(seq))
		}
	}
	if l.get(0) != 0 || l.get(n) != 0 || l.get(-1) != 0 || l.get(1<<40) != 0 {
		t.Fatal("an unpublished seq has a hash")
	}
}

// BenchmarkDeltaEvent is what a delta event costs a subscriber: applied
// once for all subscribers ("first"), then found ("shared").
//
//	go test -run '^$' -bench DeltaEvent -benchmem ./cmd/herald/internal/bench/
func BenchmarkDeltaEvent(b *testing.B) {
	base := appendDashboard(nil, 0, 100, 5, 1)
	next := appendDashboard(nil, 0, 100, 105, 2)
	d, _ := delta.Create(base, next)
	q, _ := json.Marshal(string(d))
	msg := fmt.Appendf(nil, `{"op":"event","id":"e-105","topic":"bench.0","type":"bench","key":"k5","delta":%s,"time":"2026-12-06T00:00:00Z"}`, q)
	key := []byte("k5")
	for _, shared := range []bool{false, true} {
		b.Run(map[bool]string{false: "first", true: "shared"}[shared], func(b *testing.B) {
			tc := newTextCache(maphash.MakeSeed())
			ds := newDeltaState(tc)
			bt := tc.intern(base, false)
			b.ReportAllocs()
			for b.Loop() {
				if !shared {
					clear(tc.deltas[:])
				}
				ds.keep(key, bt)
				ev, _, err := ds.keyed(msg)
				if err != nil || !bytes.Equal(ev.data.b, next) {
					b.Fatal(err)
				}
			}
		})
	}
}

// Subscribers share texts: the same data, whole or rebuilt, is one text.
func TestTextsAreShared(t *testing.T) {
	tc := newTextCache(maphash.MakeSeed())
	a, b := appendDashboard(nil, 0, 1, 1, 1), appendDashboard(nil, 0, 1, 2, 2)
	d, _ := delta.Create(a, b)
	ta := tc.intern(a, false)
	if tc.intern(bytes.Clone(a), false) != ta {
		t.Fatal("the same data interned twice")
	}
	tb1, err1 := tc.apply(ta, d)
	tb2, err2 := tc.apply(tc.intern(a, false), bytes.Clone(d))
	if err1 != nil || err2 != nil || tb1 != tb2 || !bytes.Equal(tb1.b, b) || tc.intern(b, false) != tb1 {
		t.Fatalf("apply: %v %v, shared %v", err1, err2, tb1 == tb2)
	}
	// Another base with the same delta is not taken for the first.
	other := tc.intern(bytes.Replace(a, []byte("Request rate"), []byte("Request ratE"), 1), false)
	if got, err := tc.apply(other, d); err == nil {
		t.Fatalf("a delta applied to a base it was not made for: %.40q", got.b)
	}
}
