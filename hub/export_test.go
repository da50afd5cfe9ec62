package hub

// Test-only views of client state that the tests use to prove that a
// scenario really took the path it is about (not part of the API).

// PendingLost reports whether c's pending buffer overflowed during the
// running replay, so the replay has to read the log again.
func PendingLost(c *Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendLost
}

// Catching reports whether a replay is running for c.
func Catching(c *Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.catching
}

// Dispatched is the position up to which every shard has offered the log to
// its clients.
func Dispatched(h *Hub) uint64 {
	m := ^uint64(0)
	for _, s := range h.shards {
		m = min(m, s.dispatched.Load())
	}
	return m
}

// Queued returns how many items wait in c's queue.
func Queued(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Pending returns how many live events wait in c's pending buffer.
func Pending(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Parked reports whether c's writer is parked: no goroutine runs it.
func Parked(c *Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parked
}

// Idle reports whether c's writer holds no work: the dispatcher may write
// to the connection itself.
func Idle(c *Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.writing
}

// Wake receives when Drain may return items or an error: what a writer
// waits on, for tests that drain a client themselves instead of serving it.
func Wake(c *Client) <-chan struct{} { return c.wake }

// Drain returns every item queued for c, or the reason the hub closed it.
// dst, the slice returned by the previous call, is recycled.
func Drain(c *Client, dst []Item) ([]Item, error) {
	items, _, _, _, err := c.drain(dst)
	return items, err
}

// Err returns the reason the hub closed c, or nil.
func Err(c *Client) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// The bounds of a rewind's backward look.
const (
	RewindScan  = rewindScan
	RewindBytes = rewindBytes
)

// ItemSize is what m counts for in a queue (and in a rewind's byte bound).
func ItemSize(m *Message) int { return m.size() }

// StateClients counts the clients whose state subscriptions the hub keeps
// aside (Hub.stateSubs).
func StateClients(h *Hub) int {
	n := 0
	h.stateSubs.Range(func(any, any) bool { n++; return true })
	return n
}
