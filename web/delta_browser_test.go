package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/browsertest"
)

// wireShim is evaluated in a page before it subscribes: it watches what
// herald.js receives, below it, on both transports (the WebSocket's
// messages; the SSE stream's data lines, read through fetch), counting
// the event frames that carry a delta; and it can corrupt the Nth delta
// (wire.corrupt = N), as a broken proxy would, by changing a digit of its
// checksum. wire.connections counts the connections opened.
const wireShim = `(() => {
  window.wire = { deltas: 0, connections: 0, corrupt: 0 };
  const mangle = (text) => {
    if (!text.includes('"delta":"')) return text;
    wire.deltas++;
    if (wire.deltas !== wire.corrupt) return text;
    const k = text.lastIndexOf(';"');
    const c = text[k - 1];
    return text.slice(0, k - 1) + (c === '0' ? '1' : '0') + text.slice(k);
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...a) { super(...a); wire.connections++; }
    set onmessage(fn) { super.onmessage = fn && ((m) => fn({ data: typeof m.data === 'string' ? mangle(m.data) : m.data })); }
    get onmessage() { return super.onmessage; }
  };
  const fetch0 = window.fetch;
  window.fetch = async (...a) => {
    const res = await fetch0(...a);
    if (!String(a[0]).includes('/v1/events') || !res.ok) return res;
    wire.connections++;
    let buf = '';
    const body = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new TransformStream({
      transform(chunk, ctl) {
        buf += chunk;
        const i = buf.lastIndexOf('\n');
        if (i < 0) return;
        ctl.enqueue(buf.slice(0, i + 1).split('\n').map((l) => (l.startsWith('data:') ? mangle(l) : l)).join('\n'));
        buf = buf.slice(i + 1);
      },
      flush(ctl) { if (buf) ctl.enqueue(buf); },
    })).pipeThrough(new TextEncoderStream());
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  return true;
})()`

// publishBoards publishes board(from..to-1) as key "main" of dash.ops and
// returns the data in order.
func publishBoards(t *testing.T, s *stack, from, to int) []string {
	t.Helper()
	var data []string
	for i := from; i < to; i++ {
		d := board(i)
		if _, err := s.hub.Publish(context.Background(), hub.Draft{Topic: "dash.ops", Type: "board", Key: "main", Data: d}); err != nil {
			t.Fatalf("publish: %v", err)
		}
		data = append(data, string(d))
	}
	return data
}

// subscribeDeltas subscribes the page to dash.* with delta: true and
// collects what onEvent gets in window.got (data as JSON text), the
// errors in window.errs.
func subscribeDeltas(t *testing.T, tb *browsertest.Tab, transport string) {
	t.Helper()
	browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.got = []; window.errs = []; window.sawDelta = false;
		window.sub = herald.subscribe(['dash.*'], (e) => {
			if ('delta' in e) window.sawDelta = true;
			got.push(JSON.stringify(e.data));
		}, { transport: %q, delta: true, minBackoff: 50, maxBackoff: 300, onError: (e) => errs.push(e.code || e.message) });
		sub.ready.then(() => true)`, transport))
}

func checkGot(t *testing.T, tb *browsertest.Tab, want []string) {
	t.Helper()
	browsertest.WaitFor(t, tb, "every event", fmt.Sprintf(`got.length >= %d`, len(want)))
	got := browsertest.Eval[[]string](t, tb, `got`)
	if len(got) != len(want) {
		t.Fatalf("the page got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: the page got %.80s…, want %.80s…", i, got[i], want[i])
		}
	}
	if browsertest.Eval[bool](t, tb, `sawDelta`) {
		t.Error("onEvent saw an event with a delta")
	}
}

// TestClientDeltas subscribes a page with delta: true over each transport
// to a keyed topic whose 3 KB data changes one value per event: the page
// sees the full data of every event, in order, while the server sent all
// but the first as deltas (counted below herald.js).
func TestClientDeltas(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			tb := browsertest.New(t)()
			openTestPage(t, tb, s.url)
			browsertest.Eval[bool](t, tb, wireShim)
			subscribeDeltas(t, tb, tr)
			want := publishBoards(t, s, 0, 12)
			checkGot(t, tb, want)
			if n := browsertest.Eval[int](t, tb, `wire.deltas`); n != len(want)-1 {
				t.Errorf("%d events came as deltas, want %d (all but the first)", n, len(want)-1)
			}
			if errs := browsertest.Eval[[]string](t, tb, `errs`); len(errs) > 0 {
				t.Errorf("onError: %v", errs)
			}
			browsertest.NoErrors(t, tb)
		})
	}
}

// TestClientDeltaCorrupted corrupts one delta on its way to herald.js,
// over each transport: the page never sees wrong data; herald.js reports
// delta_failed to onError, reconnects, resumes after the last good event
// (which the server then sends whole), and the page gets every event once,
// in order.
func TestClientDeltaCorrupted(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			tb := browsertest.New(t)()
			openTestPage(t, tb, s.url)
			browsertest.Eval[bool](t, tb, wireShim+` && (wire.corrupt = 3) > 0`)
			subscribeDeltas(t, tb, tr)
			want := publishBoards(t, s, 0, 10)
			checkGot(t, tb, want)
			if errs := browsertest.Eval[[]string](t, tb, `errs`); len(errs) != 1 || errs[0] != "delta_failed" {
				t.Errorf("onError got %v, want one delta_failed", errs)
			}
			if n := browsertest.Eval[int](t, tb, `wire.connections`); n != 2 {
				t.Errorf("%d connections, want 2 (a reconnect after the bad delta)", n)
			}
			// Live after the reconnect, with deltas again.
			before := browsertest.Eval[int](t, tb, `wire.deltas`)
			want = append(want, publishBoards(t, s, 10, 14)...)
			checkGot(t, tb, want)
			if n := browsertest.Eval[int](t, tb, `wire.deltas`); n-before < 3 {
				t.Errorf("%d deltas after the reconnect, want at least 3", n-before)
			}
			browsertest.NoErrors(t, tb)
		})
	}
}

// TestClientStats asks the server for the WebSocket connection's byte
// counts after deltas; over SSE stats() is null.
func TestClientStats(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	openTestPage(t, tb, s.url)
	if got := browsertest.Eval[string](t, tb, `(async () => {
		const sub = herald.subscribe(['x'], () => {}, { transport: 'sse' });
		await sub.ready;
		const st = await sub.stats();
		sub.close();
		return JSON.stringify(st);
	})()`); got != "null" {
		t.Errorf("SSE stats() = %s, want null", got)
	}
	browsertest.Eval[bool](t, tb, wireShim)
	subscribeDeltas(t, tb, "ws")
	want := publishBoards(t, s, 0, 12)
	checkGot(t, tb, want)
	res := browsertest.Eval[string](t, tb, `sub.stats().then((st) => JSON.stringify(st), (e) => 'error ' + e.code)`)
	if strings.HasPrefix(res, "error") {
		t.Fatalf("stats() failed: %s", res)
	}
	var st struct {
		Events    int64 `json:"events"`
		WireBytes int64 `json:"wire_bytes"`
		Bytes     int64 `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(res), &st); err != nil {
		t.Fatalf("stats() = %s", res)
	}
	full := 0
	for _, d := range want {
		full += len(d)
	}
	if st.Events < int64(len(want)) || st.Bytes < int64(full) || st.WireBytes*3 > st.Bytes {
		t.Errorf("stats %+v after %d events of %d bytes of data sent as deltas", st, len(want), full)
	}
	if strings.Contains(res, "op") {
		t.Errorf("stats() %s carries the reply's op", res)
	}
}

// TestClientConflate subscribes with conflate over each transport: a burst
// of events of one key reaches the page as a few events ending on the
// latest; a conflate the server refuses rejects ready with its code.
func TestClientConflate(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			s := newStack(t)
			tb := browsertest.New(t)()
			openTestPage(t, tb, s.url)
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.got = [];
				window.sub = herald.subscribe(['dash.*'], (e) => got.push(JSON.stringify(e.data)),
					{ transport: %q, delta: true, conflate: '1s' });
				sub.ready.then(() => true)`, tr))
			want := publishBoards(t, s, 0, 30)
			browsertest.WaitFor(t, tb, "the latest event", fmt.Sprintf(`got.length > 0 && got[got.length - 1] === %q`, want[len(want)-1]))
			if n := browsertest.Eval[int](t, tb, `got.length`); n >= len(want)/2 {
				t.Errorf("the page got %d events of a burst of %d: not conflated", n, len(want))
			}
			code := browsertest.Eval[string](t, tb, fmt.Sprintf(`herald.subscribe(['dash.*'], () => {}, { transport: %q, conflate: '10ms' })
				.ready.then(() => 'opened', (e) => e.code)`, tr))
			if code != "invalid_request" {
				t.Errorf("conflate 10ms: ready settled with %q, want invalid_request", code)
			}
		})
	}
}
