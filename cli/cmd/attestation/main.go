// Command attestation is the operator command line of the attestation
// control plane.
package main

import (
	"os"

	"github.com/attestation/attestation/cli"
	_ "github.com/attestation/attestation/extensions/all" // the compiled-in extensions
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
