package agent

// KeepRunning is keepRunning, for the tests of package agent_test.
var KeepRunning = keepRunning
