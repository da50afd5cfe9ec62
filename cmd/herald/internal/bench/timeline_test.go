package bench

import (
	"fmt"
	"testing"
)

// TestBuckets checks the histogram bars a report plots: 1-2-5 bounds from
// 10 µs up to the first that holds the maximum, every value counted once,
// in the bar whose bound is the first at or above it.
func TestBuckets(t *testing.T) {
	h := newHist()
	for _, v := range []int64{5, 10, 11, 150, 150, 2000, 2001, 49_000} { // µs
		if err := h.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	got := buckets(h)
	want := []Bucket{{0.01, 2}, {0.02, 1}, {0.05, 0}, {0.1, 0}, {0.2, 2}, {0.5, 0}, {1, 0}, {2, 1}, {5, 1}, {10, 0}, {20, 0}, {50, 1}}
	if len(got) != len(want) {
		t.Fatalf("got %d buckets %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if buckets(newHist()) != nil {
		t.Fatalf("an empty histogram has buckets")
	}
}

// TestSubtract checks a sample's latencies are those of its own second.
func TestSubtract(t *testing.T) {
	prev := newHist()
	for range 1000 {
		_ = prev.RecordValue(100)
	}
	cur := newHist()
	cur.Merge(prev)
	for range 10 {
		_ = cur.RecordValue(50_000)
	}
	iv := subtract(cur, prev)
	if iv.TotalCount() != 10 || iv.ValueAtQuantile(50) < 49_000 {
		t.Fatalf("interval has %d values, median %d µs; want the 10 new ones at 50 ms", iv.TotalCount(), iv.ValueAtQuantile(50))
	}
}

// TestShardDefaults checks how a run splits over shards: shares add up to
// the whole, and each shard has its own topics and source addresses.
func TestShardDefaults(t *testing.T) {
	var subs int
	var rate float64
	seen := map[string]bool{}
	for i := 1; i <= 3; i++ {
		c := Config{Subscribers: 1000, Rate: 300, SourceIPs: 4, Shard: i, Shards: 3}
		if err := c.defaults(); err != nil {
			t.Fatal(err)
		}
		subs += c.Subscribers
		rate += c.Rate
		if seen[c.Prefix] || c.sourceBase != (i-1)*4 || c.shardName() != fmt.Sprintf("%d/3", i) {
			t.Fatalf("shard %d: prefix %q source base %d name %q", i, c.Prefix, c.sourceBase, c.shardName())
		}
		seen[c.Prefix] = true
	}
	if subs != 1000 || rate != 300 {
		t.Fatalf("shards add up to %d subscribers at %v/s, want 1000 at 300/s", subs, rate)
	}
	for _, c := range []Config{{Shard: 0, Shards: 2}, {Shard: 3, Shards: 2}, {Shard: 1, Shards: -1}, {Shard: 2, Shards: 2, SourceIPs: 200}} {
		if err := c.defaults(); err == nil {
			t.Errorf("shard %d/%d with %d source addresses accepted", c.Shard, c.Shards, c.SourceIPs)
		}
	}
}
