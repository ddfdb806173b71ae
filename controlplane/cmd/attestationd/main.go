// Command attestationd is the attestation control plane daemon.
package main

import (
	"os"
	"runtime/debug"

	"github.com/attestation/attestation/controlplane/daemon"
	_ "github.com/attestation/attestation/extensions/all" // the compiled-in extensions
)

// gcPercent is the daemon's GOGC unless the environment sets one. Its
// live heap is small (tens of MB for thousands of machines) and nearly all
// its garbage is per-request, so collecting when the heap has grown 4x
// instead of Go's 2x halves the CPU spent on garbage collection under an
// enrollment storm for a few tens of MB more memory.
const gcPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(daemon.Main(os.Args[1:]))
}
