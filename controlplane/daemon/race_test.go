//go:build race

package daemon_test

// The race detector shadows every allocation: RSS bounds mean nothing.
func init() { raceDetector = true }
