//go:build race

package tablefile

const raceEnabled = true
