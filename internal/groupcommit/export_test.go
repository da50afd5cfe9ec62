package groupcommit

// Queued returns how many operations wait for a group.
func (c *Committer[T]) Queued() int { return c.q.Len() }
