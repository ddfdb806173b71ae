// Package all decides which extensions attestationd and attestation are
// built with: one blank import per extension. Third parties build their own
// binaries with a main that imports their extension beside this list (see
// docs/extensions.md).
package all

import (
	_ "github.com/attestation/attestation/extensions/tags"    // label machines
	_ "github.com/attestation/attestation/extensions/webhook" // send events to HTTP endpoints
)
