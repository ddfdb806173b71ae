// Package bench holds the control plane's end-to-end benchmarks, run by
// make bench: machine lifecycle throughput through the API of a real daemon
// on loopback, and the latency from an event's commit to its delivery to a
// subscriber. The database is durable as in production (SQLite, WAL,
// synchronous=FULL: one fsync per commit), so the figures depend mostly on
// the disk. The benchmarks measure and report; they never assert a speed.
package bench
