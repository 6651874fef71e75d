package offline

// Die ends this store's lease token without releasing its leases, as a
// process killed with SIGKILL would: for tests of what others do with
// leases left behind.
func (s *Store) Die() {
	k := s.leases
	k.mu.Lock()
	stop, done := k.stop, k.done
	k.stop, k.done, k.running = nil, nil, nil
	k.held = map[string]*Lease{}
	k.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
