package action

// LiveWorkers returns how many of s's workers have not ended, for tests
// that check what Shutdown leaves behind.
func (s *Service) LiveWorkers() int { return int(s.live.Load()) }
