package machines

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// DecommissionedError: the EK belongs to a decommissioned machine, which
// cannot enroll again until an operator reinstates it.
type DecommissionedError struct {
	ID     string
	Reason string
}

func (e *DecommissionedError) Error() string {
	reason := ""
	if e.Reason != "" {
		reason = fmt.Sprintf(" (%s)", e.Reason)
	}
	return fmt.Sprintf("this EK belongs to machine %s, which is decommissioned%s: it cannot enroll until an operator reinstates it (attestation machines reinstate %s)",
		e.ID, reason, e.ID)
}

// SelfRegistration is what an agent reports about its machine.
type SelfRegistration struct {
	EKFingerprint string
	TPMAvailable  bool
	// IP is where the request came from, as the daemon saw it.
	IP       string
	Hardware events.Hardware
}

// SelfRegister records an agent's registration of an EK the store does
// not know: a new machine in registered, which emits node.registered; when
// an older machine reported the same SMBIOS UUID with another EK, the new
// one is flagged as conflicting with it. A known EK keeps its machine and
// nothing is written: what its agent reports is recorded by ApplyTo once
// the machine has proved itself, not on an unauthenticated claim. A
// decommissioned EK is refused with *DecommissionedError. created reports
// whether the machine is new.
func (s *Service) SelfRegister(ctx context.Context, r SelfRegistration) (m *store.Machine, created bool, err error) {
	fp := NormalizeFingerprint(r.EKFingerprint)
	evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
		created = false
		old, err := tx.MachineByEK(ctx, fp)
		switch {
		case err == nil:
			if old.State == lifecycle.Decommissioned {
				return &DecommissionedError{ID: old.ID, Reason: old.DecommissionReason}
			}
			m = old
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		m = &store.Machine{
			EKFingerprint: fp,
			State:         lifecycle.Registered,
			MACs:          normalizeMACs(nil, r.Hardware.MACs),
			SMBIOSUUID:    r.Hardware.SMBIOSUUID,
			Serial:        r.Hardware.Serial,
			Product:       r.Hardware.Product,
			IP:            r.IP,
			TPMAvailable:  r.TPMAvailable,
		}
		if m.SMBIOSUUID != "" {
			same, err := tx.MachinesWithSMBIOSUUID(ctx, m.SMBIOSUUID)
			if err != nil {
				return err
			}
			if len(same) > 0 {
				m.ConflictWith = same[0].ID
			}
		}
		if err := tx.InsertMachine(ctx, m); err != nil {
			return err
		}
		ev := &events.Registered{
			IP:           m.IP,
			TPMAvailable: m.TPMAvailable,
			Hardware:     events.Hardware{SMBIOSUUID: m.SMBIOSUUID, Serial: m.Serial, Product: m.Product, MACs: m.MACs},
			ConflictWith: m.ConflictWith,
		}
		if len(m.MACs) > 0 {
			ev.MAC = m.MACs[0]
		}
		created = true
		return tx.Emit(ctx, m, ev)
	})
	if err != nil {
		return nil, false, fmt.Errorf("register machine %s: %w", fp, err)
	}
	s.committed(evs)
	return m, created, nil
}

// ApplyTo records on m what its agent reported when it registered: the
// MACs are added to those known, the IP and TPM presence replace the old
// ones, and the SMBIOS fields replace them when reported. The identity is
// the EK: nothing here changes which machine m is. Call it in the
// transaction that records the machine's attestation.
func (r SelfRegistration) ApplyTo(m *store.Machine) {
	m.MACs = normalizeMACs(m.MACs, r.Hardware.MACs)
	m.IP, m.TPMAvailable = r.IP, r.TPMAvailable
	if r.Hardware.SMBIOSUUID != "" {
		m.SMBIOSUUID = r.Hardware.SMBIOSUUID
	}
	if r.Hardware.Serial != "" {
		m.Serial = r.Hardware.Serial
	}
	if r.Hardware.Product != "" {
		m.Product = r.Hardware.Product
	}
}

// normalizeMACs adds the MACs of add that are not in have, normalized.
func normalizeMACs(have, add []string) []string {
	out := slices.Clone(have)
	if out == nil {
		out = []string{}
	}
	for _, mac := range add {
		if mac = NormalizeMAC(strings.TrimSpace(mac)); mac != "" && !slices.Contains(out, mac) {
			out = append(out, mac)
		}
	}
	return out
}

// Heartbeat records that the machine's agent is alive: last_heartbeat is
// now, the IP is the first reported one (when any), and a reported missed
// heartbeat is cleared, so the next missed deadline is reported again.
// with (may be nil) runs in the same transaction (to renew the session).
func (s *Service) Heartbeat(ctx context.Context, id string, ips []string, with func(*store.Tx, *store.Machine) error) (*store.Machine, error) {
	return s.update(ctx, "heartbeat of", id, func(tx *store.Tx, m *store.Machine) error {
		if err := transition(m, lifecycle.Heartbeat); err != nil {
			return err
		}
		m.LastHeartbeatAt, m.HeartbeatMissedAt = tx.Now(), timeZero
		if len(ips) > 0 && ips[0] != "" {
			m.IP = ips[0]
		}
		if with != nil {
			if err := with(tx, m); err != nil {
				return err
			}
		}
		return tx.UpdateMachine(ctx, m)
	})
}
