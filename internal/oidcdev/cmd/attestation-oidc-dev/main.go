// Command attestation-oidc-dev is a development OpenID Connect provider
// for trying out the operator login without Keycloak (make
// run-oidc-demo).
package main

import (
	"os"

	"github.com/attestation/attestation/internal/oidcdev"
)

func main() {
	os.Exit(oidcdev.Main(os.Args[1:]))
}
