package natsstore

import (
	"context"
	"time"
)

var IdemKey = idemKey

// SetRepair sets repairAfter and keyWait until the returned func.
func SetRepair(after, wait time.Duration) (restore func()) {
	a, w := repairAfter, keyWait
	repairAfter, keyWait = after, wait
	return func() { repairAfter, keyWait = a, w }
}

// SetCreateTimeout sets createTimeout until the returned func.
func SetCreateTimeout(d time.Duration) (restore func()) {
	c := createTimeout
	createTimeout = d
	return func() { createTimeout = c }
}

// Forget makes the store create its stream, bucket and consumer again on
// their next use, as after a failure.
func (s *Store) Forget() { s.forget() }

// Consumer opens the workers' consumer with AckWait lease.
func (s *Store) Consumer(ctx context.Context, lease time.Duration) error {
	_, err := s.consumer(ctx, lease)
	return err
}
