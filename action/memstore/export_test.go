package memstore

// Kept returns how many records the store holds, expired or not: what the
// sweep and the bounds free.
func (s *Store) Kept() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// Size is the size rule of MaxFinishedBytes.
var Size = size
