package redisstore_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/redisstore"
	"github.com/heraldpush/herald/action/storetest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, n int) []action.Store {
		_, prefix := redistest.Client(t)
		var out []action.Store
		for range n {
			rdb, _ := redistest.Client(t) // a connection per node
			s, err := redisstore.New(context.Background(), rdb, prefix)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	})
}
