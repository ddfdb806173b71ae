package machines

import (
	"context"
	"errors"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// IssueCertificate records a node certificate of the machine with the
// given ID, in one transaction: the machine must be attested or
// provisioned (else *lifecycle.TransitionError); issue makes the
// certificate for it, or refuses, and then nothing changes. A live
// certificate the machine had is superseded, and node.cert_renewed names
// both. It returns the recorded certificate and the one it superseded
// (nil: none was live).
func (s *Service) IssueCertificate(ctx context.Context, id string, issue func(*store.Tx, *store.Machine) (*store.NodeCertificate, error)) (issued, previous *store.NodeCertificate, err error) {
	_, err = s.update(ctx, "issue a node certificate to", id, func(tx *store.Tx, m *store.Machine) error {
		issued, previous = nil, nil
		if err := transition(m, lifecycle.IssueCertificate); err != nil {
			return err
		}
		c, err := issue(tx, m)
		if err != nil {
			return err
		}
		c.MachineID = m.ID
		old, err := tx.LiveNodeCertificate(ctx, m.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.InsertNodeCertificate(ctx, c); err != nil {
			return err
		}
		issued, previous = c, old
		if old == nil {
			return nil
		}
		return tx.Emit(ctx, m, &events.CertRenewed{
			Hostname:         m.Hostname,
			Serial:           c.Serial,
			NotAfter:         c.NotAfter,
			PreviousSerial:   old.Serial,
			PreviousNotAfter: old.NotAfter,
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return issued, previous, nil
}
