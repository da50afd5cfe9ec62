package tracker

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	var tr Tracker
	if err := tr.Wait(context.Background()); err != nil {
		t.Fatalf("Wait with nothing running: %v", err)
	}
	tr.Add()
	tr.Add()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := tr.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with two running: %v, want the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.Wait(context.Background()) }()
	tr.Done()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with one still running", err)
	default:
	}
	tr.Add() // arrives while waited on
	tr.Done()
	tr.Done()
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatalf("Done without Add did not panic")
		}
	}()
	tr.Done()
}
