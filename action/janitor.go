package action

import "time"

// sweepBatch bounds how many records one hold of Service.mu forgets, so a
// large expiry does not stall Submit and Get.
const sweepBatch = 4096

// janitorInterval is how often expired records are swept: a tenth of the
// TTL, between 10 ms and a minute. Get and Submit already treat a record
// past its TTL as gone; the sweep is what frees its memory.
func janitorInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Minute)
}

// janitor forgets finished records (and their idempotency keys) once their
// TTL has passed, which bounds the memory of both. The Service owns it; it
// ends when Shutdown closes stopJanitor.
func (s *Service) janitor(interval time.Duration) {
	defer close(s.janitorDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stopJanitor:
			return
		case now := <-t.C:
			s.sweep(now)
		}
	}
}

// sweep forgets every record that expired at now.
func (s *Service) sweep(now time.Time) {
	for more := true; more; {
		s.mu.Lock()
		for n := 0; ; n++ {
			if s.expiry.len() == 0 || !s.expiredLocked(s.expiry.front(), now) {
				more = false
				break
			}
			if n == sweepBatch {
				break
			}
			s.forgetLocked(s.expiry.front())
			s.expiry.pop()
		}
		s.mu.Unlock()
	}
}
