package boot

import (
	"context"
	"errors"
	"fmt"

	"github.com/attestation/attestation/controlplane/store"
)

// Resolver finds booting machines in the store and decides how they boot.
type Resolver struct {
	Store  *store.Store
	Policy Policy
}

// Lookup returns the stored machine the client's MAC matches, else the
// one its SMBIOS UUID matches, else nil.
func (r *Resolver) Lookup(ctx context.Context, c Client) (*Machine, error) {
	if len(c.MAC) > 0 {
		m, err := r.Store.MachineByMAC(ctx, c.MAC.String())
		if err == nil {
			return fromStore(m), nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("look up machine by MAC %s: %w", c.MAC, err)
		}
	}
	if c.UUID != "" {
		m, err := r.Store.MachineBySMBIOSUUID(ctx, c.UUID)
		if err == nil {
			return fromStore(m), nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("look up machine by SMBIOS UUID %s: %w", c.UUID, err)
		}
	}
	return nil, nil
}

// Decide looks the client up and applies the policy's boot decision. On
// an error the caller should not answer: a store that cannot be read
// says nothing about the machine.
func (r *Resolver) Decide(ctx context.Context, c Client) (Decision, error) {
	m, err := r.Lookup(ctx, c)
	if err != nil {
		return Decision{}, err
	}
	return r.Policy.Decide(m, c), nil
}

func fromStore(m *store.Machine) *Machine {
	return &Machine{ID: m.ID, State: m.State, SchematicID: m.SchematicID, Hostname: m.Hostname}
}
