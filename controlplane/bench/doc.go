// Package bench holds the control plane's end-to-end benchmarks, run by make
// bench: machine lifecycle throughput through the API of a real daemon on
// loopback, the latency from an event's commit to its delivery to a
// subscriber, and the enrollment storm: agents registering, attesting and
// fetching their configs from one attestationd process pinned to one CPU,
// the load generator to another (pin_test.go), with the daemon's
// enrollments/s on that core, its CPU, allocations and writes per
// enrollment, open-loop latency at 25, 50 and 80 % of that rate, and a
// kill -9 mid-storm that must lose nothing (enroll_test.go; TestEnrollmentStorm
// is its short version, an integration test). The storm's agents emulate
// their TPMs in software (an EK, RSA 2048 or ECC P-256, and an ECDSA AK
// computing ActivateCredential and Quote with Go crypto, the RSA EK's
// decryption through OpenSSL's libcrypto when cgo is on, see
// internal/ekrsa): a load generator, never part of the product. The database
// is durable as in production (SQLite, WAL, synchronous=FULL: one fsync per
// commit), so the figures depend mostly on the disk.
//
// The boot storm (bootstorm_test.go) is the whole system: 1,000 simulated
// machines, powered on 10 ms apart, each doing a network boot's real
// sequence (DHCP in full mode, TFTP of the iPXE binary, iPXE's DHCP, HTTP
// of the script, the kernel and the initramfs, the agent's DHCP, then the
// agent's enrollment) against one attestationd pinned to CPU 0 in a
// network namespace, the machines pinned to CPU 1 in another (one
// process, bootmachine_test.go); TestBootStorm is its 100-machine version,
// an integration test.
//
// The benchmarks measure and report; they never assert a speed.
package bench
