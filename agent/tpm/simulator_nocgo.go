//go:build !cgo

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

func openSimulator(string) (transport.TPMCloser, error) {
	return nil, errors.New("open TPM simulator: this binary was built without cgo; the simulator needs cgo (use a TPM device or tcp://HOST:PORT)")
}
