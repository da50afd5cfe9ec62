package action

// RecordCount is how many records the service holds, expired or not, so
// tests can tell that the janitor frees them (Get hides expired ones anyway).
func RecordCount(s *Service) (records, keys int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records), len(s.keys)
}
