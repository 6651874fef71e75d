package offline

// Die ends this store's lease token without releasing its leases, as a
// process killed with SIGKILL would: for tests of what others do with
// leases left behind.
func (s *Store) Die() { s.leases.close() }
