// Package machines applies the machine lifecycle: each operation loads the
// machine, asks package lifecycle whether the transition is legal, writes
// the change and its event in one transaction, and wakes the dispatcher.
//
// An operation an operator asks for (its context carries an actor, see
// package audit) also writes its audit record in that transaction, and
// its events name the actor.
package machines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// ErrNotFound: no machine with that ID.
var ErrNotFound = errors.New("machine not found")

// ExistsError: a machine with that EK fingerprint is already known.
type ExistsError struct {
	ID    string
	State lifecycle.State
}

func (e *ExistsError) Error() string {
	if e.State == lifecycle.Decommissioned {
		return fmt.Sprintf("a machine with this EK fingerprint exists as %s and is decommissioned; reinstate it instead", e.ID)
	}
	return fmt.Sprintf("a machine with this EK fingerprint already exists as %s (%s)", e.ID, e.State)
}

// MissingError: an operation needs a value that neither the request nor
// the machine has.
type MissingError struct {
	Field string
	// Hint says what to give, like "a role, like worker".
	Hint string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is required: the machine has none yet; give %s", e.Field, e.Hint)
}

// Service runs lifecycle operations against the store.
type Service struct {
	store *store.Store
	// committed is called with the events of every committed change.
	committed func([]events.Envelope)
	// configBase is the URL config tokens are appended to ("": approval
	// mints no config token).
	configBase string
	configTTL  time.Duration
	configKey  []byte
	// isoURL is a schematic's ISO URL, for node.provisioned (nil: none).
	isoURL func(schematicID string) string
}

// Option configures a Service.
type Option func(*Service)

// WithConfigTokens makes approval mint a one-time config token, valid for
// ttl, whose URL (publicURL/config/TOKEN) node.provisioned carries. Tokens
// are derived with key (ConfigTokenKeySize random bytes, kept outside the
// database).
func WithConfigTokens(publicURL string, ttl time.Duration, key []byte) Option {
	return func(s *Service) {
		s.configBase = strings.TrimRight(publicURL, "/") + "/config/"
		s.configTTL = ttl
		s.configKey = bytes.Clone(key)
	}
}

// WithISOURLs makes node.provisioned carry the URL of the machine's
// schematic's ISO, as url says it.
func WithISOURLs(url func(schematicID string) string) Option {
	return func(s *Service) { s.isoURL = url }
}

// New returns a Service; committed (may be nil) is told about every commit.
func New(st *store.Store, committed func([]events.Envelope), opts ...Option) *Service {
	if committed == nil {
		committed = func([]events.Envelope) {}
	}
	s := &Service{store: st, committed: committed}
	for _, o := range opts {
		o(s)
	}
	return s
}

// update runs fn on the machine with the given ID in one transaction.
func (s *Service) update(ctx context.Context, what, id string, fn func(tx *store.Tx, m *store.Machine) error) (*store.Machine, error) {
	id = NormalizeID(id)
	var out *store.Machine
	evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
		m, err := tx.MachineByID(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := fn(tx, m); err != nil {
			return err
		}
		out = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s machine %s: %w", what, id, err)
	}
	s.committed(evs)
	return out, nil
}

// transition moves m under op, or fails with *lifecycle.TransitionError.
func transition(m *store.Machine, op lifecycle.Op) error {
	next, err := lifecycle.Next(m.State, op)
	if err != nil {
		return err
	}
	m.State = next
	return nil
}

// NormalizeID lower-cases a machine ID: IDs are UUIDs, written in lower
// case, and the same ID in upper case names the same machine.
func NormalizeID(id string) string { return strings.ToLower(id) }

// NormalizeFingerprint lower-cases an EK fingerprint.
func NormalizeFingerprint(fp string) string { return strings.ToLower(fp) }

// NormalizeMAC lower-cases a MAC and writes it with colons.
func NormalizeMAC(mac string) string { return strings.ReplaceAll(strings.ToLower(mac), "-", ":") }

// Registration is an operator's pre-registration of an expected machine.
type Registration struct {
	EKFingerprint string
	MACs          []string
	Role          string
	Hostname      string
	SchematicID   string
}

// Register pre-registers a machine. It fails with *ExistsError when the EK
// is already known, decommissioned or not.
func (s *Service) Register(ctx context.Context, r Registration) (*store.Machine, error) {
	fp := NormalizeFingerprint(r.EKFingerprint)
	macs := make([]string, 0, len(r.MACs))
	for _, mac := range r.MACs {
		// 52-54-00-AB-CD-EF and 52:54:00:ab:cd:ef are one interface.
		if mac = NormalizeMAC(mac); !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	m := &store.Machine{
		EKFingerprint: fp,
		State:         lifecycle.Registered,
		MACs:          macs,
		Role:          r.Role,
		Hostname:      r.Hostname,
		SchematicID:   strings.ToLower(r.SchematicID),
		PreRegistered: true,
	}
	evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
		if err := checkSchematic(ctx, tx, m.SchematicID); err != nil {
			return err
		}
		old, err := tx.MachineByEK(ctx, fp)
		if err == nil {
			return &ExistsError{ID: old.ID, State: old.State}
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.InsertMachine(ctx, m); err != nil {
			return err
		}
		ev := &events.Registered{
			PreRegistered: true,
			Role:          m.Role,
			Hostname:      m.Hostname,
			Hardware:      events.Hardware{MACs: m.MACs},
		}
		if len(m.MACs) > 0 {
			ev.MAC = m.MACs[0]
		}
		if err := tx.Emit(ctx, m, ev); err != nil {
			return err
		}
		return record(ctx, tx, audit.MachineRegister, m, RegistrationDetail(r))
	})
	if err != nil {
		return nil, fmt.Errorf("register machine %s: %w", fp, err)
	}
	s.committed(evs)
	return m, nil
}

// RegistrationDetail is the detail of a pre-registration's audit record.
func RegistrationDetail(r Registration) string {
	return audit.Detail("ek_fingerprint", NormalizeFingerprint(r.EKFingerprint), "role", r.Role,
		"hostname", r.Hostname, "schematic", strings.ToLower(r.SchematicID))
}

// record writes the audit record of an operator's action on m, in tx
// (nothing when ctx carries no actor: see store.Tx.Audit).
func record(ctx context.Context, tx *store.Tx, action string, m *store.Machine, detail string) error {
	return tx.Audit(ctx, audit.Record{Action: action, MachineID: m.ID, Detail: detail})
}

// UnknownSchematicError: an approval or pre-registration names a
// schematic that is not stored.
type UnknownSchematicError struct{ ID string }

func (e *UnknownSchematicError) Error() string {
	return fmt.Sprintf("schematic %s does not exist: create it first (attestation schematics create -f FILE)", e.ID)
}

// checkSchematic fails with *UnknownSchematicError unless id is "" or a
// stored schematic.
func checkSchematic(ctx context.Context, tx *store.Tx, id string) error {
	if id == "" {
		return nil
	}
	_, err := tx.Schematic(ctx, strings.ToLower(id))
	if errors.Is(err, store.ErrNotFound) {
		return &UnknownSchematicError{ID: strings.ToLower(id)}
	}
	return err
}

// Approval is what an operator assigns when approving a machine.
type Approval struct {
	Role        string
	Hostname    string
	SchematicID string
}

// Approve moves an attested machine to provisioned. A role or hostname
// left empty is the one the machine has (from its pre-registration, a
// role change or an earlier approval); one it does not have either fails
// with *MissingError.
func (s *Service) Approve(ctx context.Context, id string, a Approval) (*store.Machine, error) {
	return s.update(ctx, "approve", id, func(tx *store.Tx, m *store.Machine) error {
		if err := transition(m, lifecycle.Approve); err != nil {
			return err
		}
		if a.Role == "" {
			a.Role = m.Role
		}
		if a.Hostname == "" {
			a.Hostname = m.Hostname
		}
		if a.Role == "" {
			return &MissingError{Field: "role", Hint: "a role, like worker"}
		}
		if a.Hostname == "" {
			return &MissingError{Field: "hostname", Hint: "a hostname, like node-1"}
		}
		if err := checkSchematic(ctx, tx, a.SchematicID); err != nil {
			return err
		}
		if _, err := s.approve(ctx, tx, m, a); err != nil {
			return err
		}
		return record(ctx, tx, audit.MachineApprove, m, ApprovalDetail(Approval{Role: m.Role, Hostname: m.Hostname, SchematicID: m.SchematicID}))
	})
}

// ApprovalDetail is the detail of an approval's audit record.
func ApprovalDetail(a Approval) string {
	return audit.Detail("role", a.Role, "hostname", a.Hostname, "schematic", strings.ToLower(a.SchematicID))
}

// approve assigns what the approval says and, when the Service mints config
// tokens, mints the machine's one-time config URL for node.provisioned; it
// returns that URL ("" when none is minted).
func (s *Service) approve(ctx context.Context, tx *store.Tx, m *store.Machine, a Approval) (configURL string, err error) {
	if a.SchematicID == "" && a.Role != "" {
		// The role's default schematic, if it names one.
		c, err := tx.ConfigTemplate(ctx, a.Role)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
		if err == nil {
			a.SchematicID = c.SchematicID
		}
	}
	m.Role, m.Hostname, m.SchematicID = a.Role, a.Hostname, strings.ToLower(a.SchematicID)
	m.ApprovedAt = tx.Now()
	if err := tx.UpdateMachine(ctx, m); err != nil {
		return "", err
	}
	configURL, tokenID, err := s.mintConfigURL(ctx, tx, m)
	if err != nil {
		return "", err
	}
	ev := &events.Provisioned{
		Hostname:      m.Hostname,
		Role:          m.Role,
		ConfigTokenID: tokenID,
		SchematicID:   m.SchematicID,
	}
	if m.SchematicID != "" && s.isoURL != nil {
		ev.ISOURL = s.isoURL(m.SchematicID)
	}
	return configURL, tx.Emit(ctx, m, ev)
}

// ImageCreated records node.image_created for an image built for a
// schematic, about machineID when it was built for one ("" for none).
func (s *Service) ImageCreated(ctx context.Context, machineID string, ev *events.ImageCreated) error {
	evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
		m := &store.Machine{}
		if machineID != "" {
			var err error
			if m, err = tx.MachineByID(ctx, NormalizeID(machineID)); err != nil {
				return fmt.Errorf("machine %s: %w", machineID, err)
			}
		}
		return tx.Emit(ctx, m, ev)
	})
	if err != nil {
		return fmt.Errorf("record image of schematic %s: %w", ev.SchematicID, err)
	}
	s.committed(evs)
	return nil
}

// Revoke decommissions a machine, keeping its EK as a tombstone.
func (s *Service) Revoke(ctx context.Context, id, reason string) (*store.Machine, error) {
	return s.update(ctx, "revoke", id, func(tx *store.Tx, m *store.Machine) error {
		since, why := m.DecommissionedAt, m.DecommissionReason
		if err := transition(m, lifecycle.Revoke); err != nil {
			if m.State == lifecycle.Decommissioned {
				return fmt.Errorf("%w, since %s (%s)", err, since.UTC().Format(time.RFC3339), why)
			}
			return err
		}
		m.DecommissionedAt, m.DecommissionReason = tx.Now(), strings.TrimSpace(reason)
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		// Its agent's session, config URL and node certificates stop
		// working now.
		if err := tx.EndSessions(ctx, m.ID); err != nil {
			return err
		}
		if err := tx.RevokeConfigTokens(ctx, m.ID); err != nil {
			return err
		}
		if err := tx.RevokeNodeCertificates(ctx, m.ID); err != nil {
			return err
		}
		if err := tx.Emit(ctx, m, &events.Decommissioned{Hostname: m.Hostname, Role: m.Role, Reason: m.DecommissionReason}); err != nil {
			return err
		}
		return record(ctx, tx, audit.MachineRevoke, m, RevocationDetail(m.DecommissionReason))
	})
}

// RevocationDetail is the detail of a revocation's audit record.
func RevocationDetail(reason string) string { return audit.Detail("reason", strings.TrimSpace(reason)) }

// SetRole changes a machine's role; setting the role it has changes
// nothing and emits nothing (an operator's request for it is still
// recorded in the audit trail).
func (s *Service) SetRole(ctx context.Context, id, role string) (*store.Machine, error) {
	return s.update(ctx, "set role of", id, func(tx *store.Tx, m *store.Machine) error {
		if err := transition(m, lifecycle.SetRole); err != nil {
			return err
		}
		if m.Role != role {
			old := m.Role
			m.Role = role
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
			if err := tx.Emit(ctx, m, &events.RoleChanged{Hostname: m.Hostname, OldRole: old, NewRole: role}); err != nil {
				return err
			}
		}
		// Asked for, so recorded, even when the role was already set.
		return record(ctx, tx, audit.MachineSetRole, m, RoleDetail(role))
	})
}

// RoleDetail is the detail of a role change's audit record.
func RoleDetail(role string) string { return audit.Detail("role", role) }

// Reinstate lifts a decommissioned machine's tombstone; it returns to
// registered and must attest again.
func (s *Service) Reinstate(ctx context.Context, id string) (*store.Machine, error) {
	return s.update(ctx, "reinstate", id, func(tx *store.Tx, m *store.Machine) error {
		if err := transition(m, lifecycle.Reinstate); err != nil {
			return err
		}
		m.DecommissionedAt, m.DecommissionReason, m.ApprovedAt = timeZero, "", timeZero
		// Approved again, it gets a config again.
		m.ConfiguredAt, m.HeartbeatMissedAt = timeZero, timeZero
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		ev := &events.Registered{
			TPMAvailable:  m.TPMAvailable,
			PreRegistered: m.PreRegistered,
			Reinstated:    true,
			IP:            m.IP,
			Role:          m.Role,
			Hostname:      m.Hostname,
			Hardware:      events.Hardware{SMBIOSUUID: m.SMBIOSUUID, Serial: m.Serial, Product: m.Product, MACs: m.MACs},
		}
		if len(m.MACs) > 0 {
			ev.MAC = m.MACs[0]
		}
		if err := tx.Emit(ctx, m, ev); err != nil {
			return err
		}
		return record(ctx, tx, audit.MachineReinstate, m, "")
	})
}

// Attested records a successful attestation of the machine with the given
// ID: it moves to attested (a provisioned machine stays provisioned) and
// node.online is emitted. A pre-registered machine that carries an
// intended role and hostname is approved in the same transaction when it
// attests from registered: on its first attestation, and on its first
// after a reinstatement (reinstating is the operator's word that the
// machine is trusted again, as it was when pre-registered). Any other
// machine waits in attested for an operator's approval.
func (s *Service) Attested(ctx context.Context, id string) (*store.Machine, error) {
	m, _, err := s.AttestedWith(ctx, id, nil)
	return m, err
}

// AttestedWith is Attested with more writes in the same transaction: with
// (may be nil) runs after the transition and before the machine is written,
// so it may change the machine (bind its AK) and write rows of its own
// (the agent's session); when it fails, nothing changes. When it approves
// the machine, it returns the config URL it minted ("" otherwise).
func (s *Service) AttestedWith(ctx context.Context, id string, with func(*store.Tx, *store.Machine) error) (m *store.Machine, configURL string, err error) {
	m, err = s.update(ctx, "attest", id, func(tx *store.Tx, m *store.Machine) error {
		configURL = "" // of this run of the update, should it run again
		from := m.State
		if err := transition(m, lifecycle.Attest); err != nil {
			return err
		}
		if m.FirstSeenAt.IsZero() {
			m.FirstSeenAt = tx.Now()
		}
		// An attestation is a sign of life too.
		m.AttestedAt, m.HeartbeatMissedAt = tx.Now(), timeZero
		if with != nil {
			if err := with(tx, m); err != nil {
				return err
			}
		}
		if err := tx.Emit(ctx, m, &events.Online{Hostname: m.Hostname, Role: m.Role, FirstSeen: m.FirstSeenAt}); err != nil {
			return err
		}
		if from == lifecycle.Registered && m.PreRegistered && m.Role != "" && m.Hostname != "" {
			if err := transition(m, lifecycle.Approve); err != nil {
				return err
			}
			// approve writes the machine.
			var err error
			configURL, err = s.approve(ctx, tx, m, Approval{Role: m.Role, Hostname: m.Hostname, SchematicID: m.SchematicID})
			return err
		}
		return tx.UpdateMachine(ctx, m)
	})
	if err != nil {
		return nil, "", err
	}
	return m, configURL, nil
}

// Get returns one machine.
func (s *Service) Get(ctx context.Context, id string) (*store.Machine, error) {
	id = NormalizeID(id)
	m, err := s.store.GetMachine(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("get machine %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get machine %s: %w", id, err)
	}
	return m, nil
}

var timeZero time.Time
