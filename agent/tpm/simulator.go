//go:build cgo

package tpm

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"
)

// simulatorInUse guards the process-wide simulator: the library blocks a
// second Get until the first is closed, which would hang instead of failing.
var simulatorInUse sync.Mutex

// checkSimulator reports whether seed is a number, or empty.
func checkSimulator(seed string) error {
	if seed == "" {
		return nil
	}
	if _, err := strconv.ParseInt(seed, 10, 64); err != nil {
		return fmt.Errorf("simulator seed %q: %w", seed, err)
	}
	return nil
}

// openSimulator opens the simulator; CheckSpec has checked seed.
func openSimulator(seed string) (transport.TPMCloser, error) {
	if !simulatorInUse.TryLock() {
		return nil, errors.New("open TPM simulator: already open in this process")
	}
	var (
		sim *simulator.Simulator
		err error
	)
	if seed == "" {
		sim, err = simulator.Get()
	} else {
		n, _ := strconv.ParseInt(seed, 10, 64)
		sim, err = simulator.GetWithFixedSeedInsecure(n)
	}
	if err != nil {
		simulatorInUse.Unlock()
		return nil, fmt.Errorf("open TPM simulator: %w", err)
	}
	return &simTPM{sim: sim}, nil
}

type simTPM struct {
	mu  sync.Mutex
	sim *simulator.Simulator
}

func (s *simTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return nil, errors.New("TPM simulator is closed")
	}
	return tpmutil.RunCommandRaw(s.sim, cmd)
}

func (s *simTPM) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sim == nil {
		return nil
	}
	err := s.sim.Close()
	s.sim = nil
	simulatorInUse.Unlock()
	return err
}
