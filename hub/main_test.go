package hub_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// dispatcher, replay worker and drain loop has an owner that ends it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
