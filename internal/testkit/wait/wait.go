// Package wait is the tests' one way to wait for a condition: poll it until
// it holds, failing the test at a deadline. Tests never sleep to synchronise.
package wait

import (
	"testing"
	"time"
)

// For polls cond every millisecond or so until it holds, or fails t after
// timeout with a message naming what was awaited.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}
