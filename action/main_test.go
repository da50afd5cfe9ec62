package action_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// worker, janitor and upstream connection has an owner that ends it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
