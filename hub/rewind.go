package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// MaxRewind is the most events a subscription may ask to rewind.
const MaxRewind = 1000

// ErrInvalidRewind is returned by ParseRewind for a value that is not an
// integer in 0..MaxRewind.
var ErrInvalidRewind = errors.New("invalid rewind")

// ParseRewind parses a rewind as both transports carry it: decimal digits
// (an SSE query value, or the text of a JSON number), 0..MaxRewind.
func ParseRewind(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > MaxRewind {
		return 0, fmt.Errorf("%w: %q must be an integer from 0 to %d", ErrInvalidRewind, s, MaxRewind)
	}
	return n, nil
}

// The backward look of a rewind examines at most rewindScan retained
// events, newest first, and takes at most rewindBytes of matching events
// (counted as Item sizes). A rewind that hits either bound starts where
// the look stopped: the connection gets fewer events than it asked for,
// the newest ones, never a gap.
const (
	rewindScan  = 10000
	rewindBytes = 4 << 20
)

// rewound is a matching event found by the backward look.
type rewound struct {
	seq  uint64
	size int
}

// rewindFrom returns the position C such that the newest n retained events
// matching pats lie in (C, last] (fewer when fewer are retained or a bound
// of the look is hit). A replay from C then gives those events and,
// through the seam every resume uses, the live ones after them.
//
// Every broker reads forwards (JetStream can only), so the look is a
// series of forward reads of windows at the end of the log, each older
// and four times wider than the one before: a rewind over a busy pattern
// is served by the first. Only positions and sizes are kept, n at most.
//
// Joins and leaves count only when events asks for them (the
// subscription's PresenceEvents): otherwise it never receives them.
func (c *Client) rewindFrom(ctx context.Context, b Bounds, pats []Pattern, n int, events bool) (uint64, error) {
	if n <= 0 || b.Last < b.First {
		return b.Last, nil
	}
	ring := make([]rewound, n)
	end, found, bytes, scanned := b.Last, 0, 0, uint64(0)
	// Where the look ends without n matches, the replay starts just
	// before the oldest match found (b.Last if none): no matching event
	// lies between there and where the look stopped, and starting later
	// keeps the replay clear of the log's front, which retention may
	// trim meanwhile (a replay that reads past it gets a reset).
	start := b.Last
	window := uint64(max(4*n, 64))
	for end >= b.First && scanned < rewindScan {
		from := b.First - 1
		window = min(window, rewindScan-scanned)
		if end-from > window {
			from = end - window
		}
		need := n - found
		k, err := c.readWindow(ctx, pats, from, end, ring[:need], events)
		if errors.Is(err, ErrHistoryGone) {
			// Retention dropped the window's start meanwhile: what is
			// older is gone too.
			return start, nil
		}
		if err != nil {
			return 0, err
		}
		// Take the window's matches newest first.
		for i := 0; i < min(k, need); i++ {
			r := ring[(k-1-i)%need]
			if bytes+r.size > rewindBytes {
				return r.seq, nil
			}
			bytes += r.size
			start = r.seq - 1
			if found++; found == n {
				return start, nil
			}
		}
		scanned += end - from
		end = from
		window *= 4
	}
	return start, nil
}

// readWindow reads the events matching pats in (from, end] and keeps the
// newest len(ring) of them in ring, the k-th match (from 0) at k%len(ring).
// It returns how many matched.
func (c *Client) readWindow(ctx context.Context, pats []Pattern, from, end uint64, ring []rewound, events bool) (int, error) {
	k := 0
	for after := from; after < end; {
		res, err := c.hub.readHistory(ctx, ReadRequest{
			After: after, Patterns: pats, Limit: replayPage, MaxScan: int(min(end-after, replayScan)),
		})
		if err != nil {
			return k, err
		}
		for _, m := range res.Messages {
			if m.seq > end {
				break
			}
			if !events && m.isPresence() {
				continue
			}
			ring[k%len(ring)] = rewound{seq: m.seq, size: m.size()}
			k++
		}
		if !res.More || res.Next <= after {
			break
		}
		after = res.Next
	}
	return k, nil
}
