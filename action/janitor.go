package action

import "time"

// sweep forgets every finished record (and its idempotency key) that
// expired at now, which bounds the memory of both. The Service's janitor
// (see expiry.Janitor) calls it until Shutdown closes stopJanitor.
func (s *Service) sweep(now time.Time) {
	s.expiry.Sweep(&s.mu, func(r *record) bool { return s.expiredLocked(r, now) }, s.forgetLocked)
}
