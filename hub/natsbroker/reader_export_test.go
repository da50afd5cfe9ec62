package natsbroker

import "testing"

// OnRead has f called, on b's history reads, before each fetch from
// their consumer ("fetch") and each check of what the stream holds
// ("held"), until the test ends.
func OnRead(t testing.TB, b *Broker, f func(stage string)) {
	h := func(rb *Broker, stage string) {
		if rb == b {
			f(stage)
		}
	}
	readHook.Store(&h)
	t.Cleanup(func() { readHook.Store(nil) })
}
