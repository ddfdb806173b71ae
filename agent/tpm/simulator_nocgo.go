//go:build !cgo

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

var errNoSimulator = errors.New("this binary was built without cgo; the simulator needs cgo (use a TPM device or tcp://HOST:PORT)")

func checkSimulator(string) error { return errNoSimulator }

// openSimulator is never reached: CheckSpec refuses the simulator first.
func openSimulator(string) (transport.TPMCloser, error) { return nil, errNoSimulator }
