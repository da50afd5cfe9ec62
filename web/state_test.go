package web_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/relay"
)

func (s *stack) publishKeyed(t *testing.T, topic, key, data string) {
	t.Helper()
	if _, err := s.hub.Publish(context.Background(), hub.Draft{Topic: topic, Key: key, Data: []byte(data)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// stateText renders a topic's state as the page folds it: key=data, by key.
func stateText(t *testing.T, s *stack, topic string) string {
	t.Helper()
	st, err := s.hub.State(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range st.Events {
		m[e.Key] = string(e.Data)
	}
	return fmt.Sprint(m)
}

// TestClientState subscribes with state over each transport: the page
// folds the state and the events after it into the topic's state, gets one
// onSynced, resumes after a cut without the state again, and after a
// restart (a reset: the new server's log has another epoch) gets the new
// server's state and onSynced again.
func TestClientState(t *testing.T) {
	for _, tr := range []string{"sse", "ws"} {
		t.Run(tr, func(t *testing.T) {
			first := newStack(t)
			addr := first.srv.Listener.Addr().String()
			for i := range 20 {
				first.publishKeyed(t, "doc.7", fmt.Sprintf("k%d", i%4), fmt.Sprint(i))
			}
			px := relay.Start(t, addr, relay.Options{})
			tb := browsertest.New(t)()
			openTestPage(t, tb, px.URL())
			browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.st = {}; window.synced = []; window.n = 0;
				window.text = () => '{' + Object.keys(st).sort().map((k) => k + ':' + JSON.stringify(st[k])).join(' ') + '}';
				window.sub = herald.subscribe(['doc.7'], (e) => {
					n++;
					if (e.data === null) delete st[e.key]; else st[e.key] = e.data;
				}, { transport: %q, state: true, minBackoff: 50, maxBackoff: 300,
					onSynced: (s) => synced.push(s), onReset: () => { window.st = {}; } });
				sub.ready.then(() => true)`, tr))
			browsertest.WaitFor(t, tb, "the synced", `synced.length === 1`)
			if got := browsertest.Eval[int](t, tb, `n`); got != 4 {
				t.Fatalf("%d state events before the synced, want 4", got)
			}
			syncedText := browsertest.Eval[string](t, tb, `JSON.stringify(synced[0].topics) + ' ' + (synced[0].id !== '')`)
			if syncedText != `["doc.7"] true` {
				t.Fatalf("synced %s", syncedText)
			}
			first.publishKeyed(t, "doc.7", "k1", "null")
			first.publishKeyed(t, "doc.7", "k9", `"new"`)
			browsertest.WaitFor(t, tb, "the live events", `n === 6`)
			if n := px.Cut(); n == 0 {
				t.Fatal("the proxy relayed no connection to cut")
			}
			first.publishKeyed(t, "doc.7", "k0", `"while away"`)
			browsertest.WaitFor(t, tb, "the resumed event", `n === 7`)
			want := strings.ReplaceAll(stateText(t, first, "doc.7"), "map[", "{")
			want = strings.ReplaceAll(want, "]", "}")
			if got := browsertest.Eval[string](t, tb, `text()`); got != want || browsertest.Eval[int](t, tb, `synced.length`) != 1 {
				t.Fatalf("folded %s with %d synced, want %s after one synced", got, browsertest.Eval[int](t, tb, `synced.length`), want)
			}

			first.stop()
			browsertest.WaitFor(t, tb, "the client to notice", `sub.state === 'reconnecting'`)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listening again on %s: %v", addr, err)
			}
			second := newStackOn(t, ln, nil)
			second.publishKeyed(t, "doc.7", "z", `"second"`)
			browsertest.WaitFor(t, tb, "the second synced", `synced.length === 2`)
			second.publishKeyed(t, "doc.7", "y", `"live"`)
			browsertest.WaitFor(t, tb, "the live event", `st.y === 'live'`)
			if got := browsertest.Eval[string](t, tb, `text()`); got != `{y:"live" z:"second"}` {
				t.Fatalf("folded %s after the reset, want the second server's state", got)
			}
			browsertest.NoErrors(t, tb)
		})
	}
}
