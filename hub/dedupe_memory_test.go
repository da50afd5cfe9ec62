package hub

import (
	"strconv"
	"testing"
	"time"
)

// TestMemDedupeBounds checks the window and the byte bound of the memory
// broker's dedupe keys: a key is seen within its window and not after it,
// a key appended again lives from its newer time, and past the bound the
// oldest keys go first while the memory stays within it.
func TestMemDedupeBounds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newMemDedupe(time.Minute, 10*(len("key:0")+dedupeOverhead))
	d.add("a", t0)
	if !d.seen("a", t0.Add(59*time.Second)) {
		t.Fatal("a key was not seen within its window")
	}
	if d.seen("a", t0.Add(time.Minute)) {
		t.Fatal("a key was seen after its window")
	}
	d.add("b", t0)
	d.add("b", t0.Add(30*time.Second)) // again: lives from its newer time
	d.add("c", t0.Add(70*time.Second)) // expires a, and b's older entry only
	if _, ok := d.at["a"]; ok {
		t.Fatal("an expired key is still held")
	}
	if !d.seen("b", t0.Add(80*time.Second)) {
		t.Fatal("a key appended again was forgotten at its older time")
	}
	for i := range 100 {
		d.add("key:"+strconv.Itoa(i), t0.Add(80*time.Second))
		if d.bytes > d.max {
			t.Fatalf("after %d keys the dedupe holds %d bytes, bound %d", i+1, d.bytes, d.max)
		}
	}
	if !d.seen("key:99", t0.Add(80*time.Second)) || d.seen("key:0", t0.Add(80*time.Second)) {
		t.Fatal("past the bound, the newest key must be held and the oldest forgotten")
	}
	if len(d.at) > 10 {
		t.Fatalf("%d keys held, bound allows 10", len(d.at))
	}
}
