//go:build !race

package tablefile

// raceEnabled tells tests that count allocations whether the race detector
// is on.
const raceEnabled = false
