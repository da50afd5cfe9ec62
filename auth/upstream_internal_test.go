package auth

import (
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// FuzzUpstreamGrants: whatever the application answers, the decoder
// returns grants that hold only patterns that parse, a bounded expiry, and
// info that is an object; or an error. It never panics.
func FuzzUpstreamGrants(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice","subscribe":["chat.*"],"publish":["chat.>"],"actions":["todo.add"],"expires_in":300}`,
		`{"user":"bob","info":{"name":"Bob"},"expires_in":0.5}`,
		`{}`, `null`, `[]`, `"x"`, `{"subscribe":"chat.*"}`, `{"subscribe":["a..b"]}`, `{"expires_in":-1}`,
		`{"expires_in":1e400}`, `{"expires_in":1e300}`, `{"info":[1]}`, `{"info":null}`, `{"user":1}`,
		`{"user":"a"} {"user":"b"}`, ` {"user":"a"} `, `{"subscribe":[">","*.x",""]}`,
	} {
		f.Add([]byte(s))
	}
	const maxTTL = time.Hour
	f.Fuzz(func(t *testing.T, body []byte) {
		g, err := decodeGrants(body, maxTTL)
		if err != nil {
			if g != nil {
				t.Fatal("grants with an error")
			}
			return
		}
		if g.ttl < time.Second || g.ttl > maxTTL {
			t.Fatalf("ttl %v out of [1s, %v]", g.ttl, maxTTL)
		}
		for _, ps := range [][]hub.Pattern{g.subscribe, g.publish, g.actions} {
			if len(ps) > UpstreamMaxPatterns {
				t.Fatalf("%d patterns", len(ps))
			}
			for _, p := range ps {
				if _, err := hub.ParsePattern(p.String()); err != nil {
					t.Fatalf("pattern %q does not parse: %v", p, err)
				}
			}
		}
		if g.info != nil && (!json.Valid(g.info) || g.info[0] != '{') {
			t.Fatalf("info %q is not an object", g.info)
		}
		p := g.principal()
		if !p.Upstream() || p.Anonymous() {
			t.Fatal("the principal is not the application's")
		}
	})
}

func TestDecodeGrants(t *testing.T) {
	for _, tc := range []struct {
		body string
		ttl  time.Duration // 0: an error
	}{
		{`{"user":"a","subscribe":["chat.*"],"expires_in":300}`, 300 * time.Second},
		{`{"user":"a"}`, DefaultUpstreamTTL},
		{`{"user":"a","expires_in":0}`, DefaultUpstreamTTL},
		{`{"user":"a","expires_in":0.2}`, time.Second},
		{`{"user":"a","expires_in":99999}`, time.Hour},
		{`{"user":"a","expires_in":-1}`, 0},
		{`{"user":"a","expires_in":"60"}`, 0},
		{`{"user":"a","subscribe":["chat..x"]}`, 0},
		{`{"user":"a","subscribe":"chat.x"}`, 0},
		{`{"user":"a","info":"Alice"}`, 0},
		{`null`, 0},
		{`{"user":"a"}x`, 0},
		{`{"user":"a","publish":[` + strings.Repeat(`"a",`, UpstreamMaxPatterns) + `"a"]}`, 0},
		{`{"user":"a","x":"` + strings.Repeat("x", UpstreamMaxAnswer) + `"}`, 0},
	} {
		g, err := decodeGrants([]byte(tc.body), time.Hour)
		switch {
		case tc.ttl == 0 && err == nil:
			t.Errorf("%.60s: accepted, want an error", tc.body)
		case tc.ttl != 0 && err != nil:
			t.Errorf("%.60s: %v", tc.body, err)
		case tc.ttl != 0 && g.ttl != tc.ttl:
			t.Errorf("%.60s: ttl %v, want %v", tc.body, g.ttl, tc.ttl)
		}
	}
}

// The cache holds at most its entries and bytes, dropping the least
// recently used, and never an expired answer.
func TestGrantCacheBounds(t *testing.T) {
	now := time.Now()
	key := func(i int) [sha256.Size]byte { return upstreamCreds{cookie: string(rune('a' + i))}.key() }
	res := func() *grantResult {
		return &grantResult{p: &Principal{Subject: "u", upstream: true}, expires: now.Add(time.Minute)}
	}
	c := newGrantCache(3, 1<<20)
	for i := range 3 {
		c.put(key(i), res())
	}
	c.get(key(0), now) // 1 is now the least recently used
	c.put(key(3), res())
	if _, ok := c.get(key(1), now); ok || c.len() != 3 {
		t.Fatalf("entry 1 kept, or %d entries: want the least recently used gone, 3 left", c.len())
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.get(key(i), now); !ok {
			t.Fatalf("entry %d gone", i)
		}
	}
	if _, ok := c.get(key(0), now.Add(time.Minute)); ok || c.len() != 2 {
		t.Fatal("an expired answer was returned")
	}

	size := res().size()
	c = newGrantCache(1000, 2*size)
	for i := range 10 {
		c.put(key(i), res())
	}
	if c.len() != 2 || c.bytes > 2*size {
		t.Fatalf("%d entries, %d bytes: want 2 within %d bytes", c.len(), c.bytes, 2*size)
	}
}
