package hub

import (
	"testing"
	"time"
)

// TestDirectGate: a shard writes directly only a lone batch of one event,
// stops after a window in which dispatching kept it busy more than 3/4 of
// the time, tries again after a pause, pausing twice as long each time it
// finds itself busy again (up to the most), and pauses the least again
// after a calm window of direct writes.
func TestDirectGate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var g directGate
	if g.allow(2, 0, t0) || g.allow(1, 1, t0) {
		t.Fatal("allowed a batch of two, or one with batches waiting behind it")
	}
	const tick = 10 * time.Millisecond
	now := t0
	// run dispatches one event every tick for d, each busy for frac of a
	// tick, as shard.dispatch does; it returns how many were allowed and
	// when the first was.
	run := func(d time.Duration, frac float64) (allowed int, first time.Duration) {
		first = -1
		for end := now.Add(d); now.Before(end); now = now.Add(tick) {
			if g.allow(1, 0, now) {
				if allowed++; first < 0 {
					first = now.Sub(end.Add(-d))
				}
			}
			g.account(now, now.Add(time.Duration(frac*float64(tick))))
		}
		return allowed, first
	}
	if n, _ := run(time.Second, 0.1); n != 100 {
		t.Fatalf("%d of 100 allowed while calm", n)
	}
	// Busy for less than 3/4 of the time: still allowed.
	if n, _ := run(time.Second, 0.7); n != 100 {
		t.Fatalf("%d of 100 allowed while busy 70 %% of the time", n)
	}
	// Busy: refused from the end of a window on, for the shortest pause.
	if n, _ := run(300*time.Millisecond, 0.95); n < 10 || n > 20 {
		t.Fatalf("%d of 30 allowed while busy, want those of the first window or so", n)
	}
	// untilAllowed dispatches calm events until one is allowed, and
	// returns how long that took.
	untilAllowed := func() time.Duration {
		start := now
		for ; !g.allow(1, 0, now); now = now.Add(tick) {
			g.account(now, now.Add(tick/10))
			if now.Sub(start) > time.Minute {
				t.Fatal("never allowed again")
			}
		}
		g.account(now, now.Add(tick/10))
		now = now.Add(tick)
		return now.Sub(start)
	}
	pause := directPauseMin
	for range 6 {
		// The pause, with the shard calm (writing through the writers),
		// then a try that finds it busy again. The pause runs from the
		// end of the last busy window, which may end in the calm run.
		if took := untilAllowed(); took < pause-directWindow || took > pause+directWindow+tick {
			t.Fatalf("allowed again %v into a pause of %v", took, pause)
		}
		run(2*directWindow, 0.95)
		pause = min(2*pause, directPauseMax)
	}
	if pause != directPauseMax {
		t.Fatalf("pause %v, want it to have reached %v", pause, directPauseMax)
	}
	// A calm window of direct writes brings the shortest pause back.
	untilAllowed()
	run(2*directWindow, 0.1)
	run(2*directWindow, 0.95)
	if took := untilAllowed(); took > directPauseMin+directWindow+tick {
		t.Fatalf("allowed again %v after the pause that followed a calm window, want within %v", took, directPauseMin)
	}

	never := directGate{never: true}
	if never.allow(1, 0, t0) {
		t.Fatal("allowed with NoDirectWrites")
	}
}
