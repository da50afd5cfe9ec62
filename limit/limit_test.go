package limit_test

import (
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/limit"
)

func TestConns(t *testing.T) {
	c := limit.NewConns(3, 2)
	r1, err := c.Acquire("10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := c.Acquire("10.0.0.1")
	if _, err := c.Acquire("10.0.0.1"); !errors.Is(err, limit.ErrTooManyFromIP) {
		t.Errorf("third from one address: %v", err)
	}
	r3, err := c.Acquire("10.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire("10.0.0.3"); !errors.Is(err, limit.ErrTooManyConns) {
		t.Errorf("fourth in all: %v", err)
	}
	r1()
	r1() // a second release is ignored
	if c.Open() != 2 {
		t.Errorf("open %d after one release, want 2", c.Open())
	}
	r4, err := c.Acquire("10.0.0.1")
	if err != nil {
		t.Errorf("after a release: %v", err)
	}
	for _, r := range []func(){r2, r3, r4} {
		r()
	}
	if c.Open() != 0 {
		t.Errorf("open %d after all released", c.Open())
	}
	var none *limit.Conns
	if rel, err := none.Acquire("x"); err != nil || rel == nil {
		t.Error("a nil Conns limits")
	}
}

func TestConnsConcurrent(t *testing.T) {
	c := limit.NewConns(50, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Acquire("a"); err == nil {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got != 50 || c.Open() != 50 {
		t.Errorf("%d acquired, %d open; want exactly 50", got, c.Open())
	}
}

func TestRates(t *testing.T) {
	r := limit.NewRates(10, 5)
	for i := range 5 {
		if ok, _ := r.Allow("alice", 1); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := r.Allow("alice", 1)
	if ok || wait <= 0 || wait > 150*time.Millisecond {
		t.Errorf("sixth: ok %v, wait %v; want a refusal for about 100ms", ok, wait)
	}
	if ok, _ := r.Allow("bob", 1); !ok {
		t.Error("another key shares the bucket")
	}
	if ok, _ := r.Allow("carol", 50); !ok {
		t.Error("a batch larger than the burst is refused from a full bucket")
	}
	if ok, _ := r.Allow("carol", 1); ok {
		t.Error("the large batch did not empty the bucket")
	}
	if limit.NewRates(0, 0) != nil {
		t.Error("a rate of 0 limits")
	}
	if limit.RetryAfter(10*time.Millisecond) != 1 || limit.RetryAfter(1500*time.Millisecond) != 2 {
		t.Error("RetryAfter rounding")
	}
}

// TestRatesForget checks that buckets of idle callers are dropped, so an
// address scan cannot grow the map without bound.
func TestRatesForget(t *testing.T) {
	r := limit.NewRates(1e6, 1) // refills in a microsecond
	for i := range 5000 {
		r.Allow(string(rune('a'+i%26))+string(rune(i)), 1)
	}
	if n := r.Keys(); n > 2100 {
		t.Errorf("%d buckets held after 5000 one-off callers", n)
	}
}

func TestClientIP(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "192.0.2.7:5555"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if got := limit.ClientIP(req); got != "192.0.2.7" {
		t.Errorf("ClientIP %q", got)
	}
}
