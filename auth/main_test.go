package auth_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The JWKS refresh goroutine ends with its context: no test may leave one.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
