// Package expiry keeps records in memory that expire in the order they are
// added, such as finished actions with one TTL: a queue that knows the sum
// of its items' sizes (a bound of count or bytes forgets the oldest first),
// and the janitor that forgets expired items from its front.
package expiry

// Queue is a first-in first-out queue of items with sizes. The zero value
// is an empty queue. A Queue is not safe for concurrent use: its owner's
// lock guards it.
type Queue[T any] struct {
	items []item[T]
	head  int
	bytes int
}

type item[T any] struct {
	v    T
	size int
}

// Len returns the number of items.
func (q *Queue[T]) Len() int { return len(q.items) - q.head }

// Bytes returns the sum of the items' sizes.
func (q *Queue[T]) Bytes() int { return q.bytes }

// Push adds v, of size bytes, at the back.
func (q *Queue[T]) Push(v T, size int) {
	q.items = append(q.items, item[T]{v: v, size: size})
	q.bytes += size
}

// Front returns the oldest item. The queue must not be empty.
func (q *Queue[T]) Front() T { return q.items[q.head].v }

// Pop removes the oldest item. The queue must not be empty.
func (q *Queue[T]) Pop() {
	q.bytes -= q.items[q.head].size
	q.items[q.head] = item[T]{}
	q.head++
	// Reclaim the consumed front once it is at least half of the slice.
	if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
}
