// Command attestationd is the attestation control plane daemon.
package main

import (
	"os"

	"github.com/attestation/attestation/controlplane/daemon"
	_ "github.com/attestation/attestation/extensions/all" // the compiled-in extensions
)

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}
