//go:build !cgo

package tpm

import (
	"strings"
	"testing"
)

func TestSimulatorNeedsCgo(t *testing.T) {
	_, err := Open("simulator")
	if err == nil || !strings.Contains(err.Error(), "without cgo") {
		t.Fatalf("Open(simulator) = %v, want an error about cgo", err)
	}
}
