package expiry

import (
	"sync"
	"time"
)

// sweepBatch bounds how many items one hold of the owner's lock forgets, so
// a large expiry does not stall the owner's other calls.
const sweepBatch = 4096

// Interval is how often records kept for ttl are swept: a tenth of the TTL,
// between 10 ms and a minute. Readers already treat a record past its TTL
// as gone; the sweep is what frees its memory.
func Interval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Minute)
}

// Janitor calls sweep every interval until stop is closed, then closes
// done. Its caller starts it on a goroutine of its own and owns it.
func Janitor(interval time.Duration, stop <-chan struct{}, done chan<- struct{}, sweep func(now time.Time)) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			sweep(now)
		}
	}
}

// Sweep pops the items at q's front for which gone holds, calling forget
// on each, until one does not hold. mu is q's lock; Sweep takes it for a
// batch of items at a time.
func (q *Queue[T]) Sweep(mu sync.Locker, gone func(T) bool, forget func(T)) {
	for more := true; more; {
		mu.Lock()
		for n := 0; ; n++ {
			if q.Len() == 0 || !gone(q.Front()) {
				more = false
				break
			}
			if n == sweepBatch {
				break
			}
			forget(q.Front())
			q.Pop()
		}
		mu.Unlock()
	}
}
