package claimbatch

// Waiting returns how many callers are in Claim.
func (b *Batcher) Waiting() int { return int(b.waiting.Load()) }

// Hold takes the fetch token, as a caller fetching would, until the
// returned func.
func (b *Batcher) Hold() (release func()) {
	b.token <- struct{}{}
	return func() { <-b.token }
}
