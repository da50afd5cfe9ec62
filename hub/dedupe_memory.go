package hub

import "time"

// DefaultDedupeMaxBytes bounds the memory of a MemoryBroker's dedupe keys.
const DefaultDedupeMaxBytes = 64 << 20

// dedupeOverhead is what a remembered dedupe key costs besides its bytes:
// its map entry and its place in the queue, roughly.
const dedupeOverhead = 96

// memDedupe remembers the dedupe keys a MemoryBroker appended, each for
// the window, and forgets them in the order they came. It is bounded in
// bytes: past the bound the oldest keys are forgotten before their window
// ends, which shortens the window rather than growing without end (a
// source's records come at most as fast as it publishes them, so only a
// burst beyond the bound's worth of keys per window is exposed).
//
// Every entry of the queue counts against the bound (a key appended twice
// is in it twice), so the map, whose keys are a subset, is bounded too.
//
// It is owned by the broker: every method runs under MemoryBroker.mu.
type memDedupe struct {
	window time.Duration
	max    int
	bytes  int
	at     map[string]time.Time // key -> when it was appended
	queue  []dedupeEntry        // keys in the order they were appended, from head
	head   int
}

type dedupeEntry struct {
	key string
	at  time.Time
}

func newMemDedupe(window time.Duration, max int) *memDedupe {
	return &memDedupe{window: window, max: max, at: make(map[string]time.Time)}
}

// seen reports whether key was appended within the window.
func (d *memDedupe) seen(key string, now time.Time) bool {
	at, ok := d.at[key]
	return ok && now.Sub(at) < d.window
}

// add remembers key as appended at now, then forgets what is past the
// window or over the bound.
func (d *memDedupe) add(key string, now time.Time) {
	d.bytes += len(key) + dedupeOverhead
	d.at[key] = now
	d.queue = append(d.queue, dedupeEntry{key, now})
	d.expire(now)
}

// expire forgets the keys appended before the window, and the oldest keys
// while over the bound. A key appended again stays under its newer time:
// its older queue entry forgets nothing.
func (d *memDedupe) expire(now time.Time) {
	for d.head < len(d.queue) {
		e := d.queue[d.head]
		if now.Sub(e.at) < d.window && d.bytes <= d.max {
			break
		}
		d.queue[d.head] = dedupeEntry{}
		d.head++
		d.bytes -= len(e.key) + dedupeOverhead
		if at, ok := d.at[e.key]; ok && at.Equal(e.at) {
			delete(d.at, e.key)
		}
	}
	if d.head > 1024 && d.head*2 > len(d.queue) {
		n := copy(d.queue, d.queue[d.head:])
		clear(d.queue[n:])
		d.queue = d.queue[:n]
		d.head = 0
	}
}
