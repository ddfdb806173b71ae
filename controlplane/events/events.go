// Package events defines the typed lifecycle events of the control plane and
// the dispatcher that delivers them, at least once, from the outbox to every
// subscriber.
//
// Every state change writes its event into the outbox table in the same
// transaction (see package store), so a crash loses none; the Dispatcher
// then hands each committed event to each subscriber in commit order, each
// subscriber in its own goroutine and each call under its own timeout.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/attestation/attestation/controlplane/audit"
)

// Type names a lifecycle event, as it appears on the wire and in the log.
type Type string

// The nine lifecycle event types.
const (
	TypeRegistered      Type = "node.registered"
	TypeOnline          Type = "node.online"
	TypeConfigured      Type = "node.configured"
	TypeImageCreated    Type = "node.image_created"
	TypeProvisioned     Type = "node.provisioned"
	TypeDecommissioned  Type = "node.decommissioned"
	TypeHeartbeatMissed Type = "node.heartbeat_missed"
	TypeRoleChanged     Type = "node.role_changed"
	TypeCertRenewed     Type = "node.cert_renewed"
)

// Types lists every event type in lifecycle order.
func Types() []Type {
	return []Type{
		TypeRegistered, TypeOnline, TypeProvisioned, TypeConfigured,
		TypeImageCreated, TypeRoleChanged, TypeHeartbeatMissed,
		TypeCertRenewed, TypeDecommissioned,
	}
}

// Valid reports whether t is one of the nine event types.
func (t Type) Valid() bool {
	for _, k := range Types() {
		if t == k {
			return true
		}
	}
	return false
}

// Common carries the fields every event has. The outbox fills ID, Seq and
// Raw when an event is read back.
type Common struct {
	Event         Type      `json:"event"`
	ID            string    `json:"id,omitempty"`
	Seq           int64     `json:"seq,omitempty"`
	MachineID     string    `json:"machine_id"`
	EKFingerprint string    `json:"ek_fingerprint"`
	Timestamp     time.Time `json:"timestamp"`
	// Actor is the operator whose action wrote the event; nil for the
	// events of agents and of the daemon itself (the heartbeat sweeper).
	Actor *audit.Actor `json:"actor,omitempty"`
	// Raw is the payload exactly as stored, for handlers that forward it.
	Raw json.RawMessage `json:"-"`
}

// Header returns the common fields; it makes every typed payload an Event.
func (c *Common) Header() *Common { return c }

// Event is implemented by the pointer to every typed payload.
type Event interface {
	Header() *Common
}

// Hardware is what a machine reported about itself; attributes, never identity.
type Hardware struct {
	SMBIOSUUID string   `json:"smbios_uuid,omitempty"`
	Serial     string   `json:"serial,omitempty"`
	Product    string   `json:"product,omitempty"`
	MACs       []string `json:"macs,omitempty"`
}

// Registered: a machine was pre-registered by an operator, self-registered
// by its agent, or reinstated.
type Registered struct {
	Common
	IP            string   `json:"ip,omitempty"`
	MAC           string   `json:"mac,omitempty"`
	TPMAvailable  bool     `json:"tpm_available"`
	Hardware      Hardware `json:"hardware"`
	PreRegistered bool     `json:"pre_registered"`
	Reinstated    bool     `json:"reinstated,omitempty"`
	Role          string   `json:"role,omitempty"`
	Hostname      string   `json:"hostname,omitempty"`
	// ConflictWith is the ID of an older machine that reported the same
	// SMBIOS UUID with another EK.
	ConflictWith string `json:"conflict_with,omitempty"`
}

// Online: a machine attested successfully.
type Online struct {
	Common
	Hostname  string    `json:"hostname,omitempty"`
	Role      string    `json:"role,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
}

// Provisioned: a machine was approved and has a one-time config waiting.
//
// Its config URL is a bearer secret (whoever fetches it first gets the
// machine's config, and the machine gets nothing), so it is never stored
// with the event, listed by the API or handed to a subscriber that did
// not ask: the event carries ConfigTokenID, a reference useless without
// the daemon's key, and ConfigURL is filled in at delivery only for the
// subscriptions that set ConfigURLs.
type Provisioned struct {
	Common
	Hostname      string `json:"hostname"`
	Role          string `json:"role"`
	ConfigTokenID string `json:"config_token_id,omitempty"`
	ConfigURL     string `json:"config_url,omitempty"`
	SchematicID   string `json:"schematic_id,omitempty"`
	ISOURL        string `json:"iso_url,omitempty"`
}

// Configured: a machine fetched its one-time config.
type Configured struct {
	Common
	Hostname string `json:"hostname"`
	Role     string `json:"role"`
}

// ImageCreated: a bootable image was built for a machine's schematic.
type ImageCreated struct {
	Common
	SchematicID string `json:"schematic_id"`
	ISOURL      string `json:"iso_url"`
	SHA256      string `json:"sha256,omitempty"`
	Size        int64  `json:"size,omitempty"`
}

// Decommissioned: an operator revoked a machine.
type Decommissioned struct {
	Common
	Hostname string `json:"hostname,omitempty"`
	Role     string `json:"role,omitempty"`
	Reason   string `json:"reason"`
}

// HeartbeatMissed: a machine's heartbeat deadline passed.
type HeartbeatMissed struct {
	Common
	Hostname      string    `json:"hostname,omitempty"`
	Role          string    `json:"role,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Deadline      time.Time `json:"deadline"`
}

// RoleChanged: an operator changed a machine's role.
type RoleChanged struct {
	Common
	Hostname string `json:"hostname,omitempty"`
	OldRole  string `json:"old_role"`
	NewRole  string `json:"new_role"`
}

// CertRenewed: a machine's node certificate was renewed: a new one was
// issued while the previous one was still valid (it is superseded).
// Serials are lower-case hex.
type CertRenewed struct {
	Common
	Hostname         string    `json:"hostname,omitempty"`
	Serial           string    `json:"serial"`
	NotAfter         time.Time `json:"not_after"`
	PreviousSerial   string    `json:"previous_serial"`
	PreviousNotAfter time.Time `json:"previous_not_after"`
}

// New returns an empty payload of type t, for decoding.
func New(t Type) (Event, error) {
	switch t {
	case TypeRegistered:
		return &Registered{}, nil
	case TypeOnline:
		return &Online{}, nil
	case TypeProvisioned:
		return &Provisioned{}, nil
	case TypeConfigured:
		return &Configured{}, nil
	case TypeImageCreated:
		return &ImageCreated{}, nil
	case TypeDecommissioned:
		return &Decommissioned{}, nil
	case TypeHeartbeatMissed:
		return &HeartbeatMissed{}, nil
	case TypeRoleChanged:
		return &RoleChanged{}, nil
	case TypeCertRenewed:
		return &CertRenewed{}, nil
	}
	return nil, fmt.Errorf("unknown event type %q", t)
}

// Envelope is an event as stored in the outbox: its columns plus the JSON
// of its typed payload.
type Envelope struct {
	Seq           int64
	ID            string
	Type          Type
	MachineID     string
	EKFingerprint string
	Time          time.Time
	// Actor is the operator whose action wrote the event (nil: none).
	Actor   *audit.Actor
	Payload json.RawMessage
}

// Decode returns the typed payload of e, with Common filled from the
// envelope and Raw set to the stored JSON.
func (e Envelope) Decode() (Event, error) {
	ev, err := New(e.Type)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(e.Payload, ev); err != nil {
		return nil, fmt.Errorf("decode %s event %d: %w", e.Type, e.Seq, err)
	}
	h := ev.Header()
	h.Event, h.ID, h.Seq = e.Type, e.ID, e.Seq
	h.MachineID, h.EKFingerprint, h.Timestamp = e.MachineID, e.EKFingerprint, e.Time
	h.Actor, h.Raw = e.Actor, e.Payload
	return ev, nil
}

// Encode fills the event's header type if unset and returns its JSON,
// without a Provisioned event's ConfigURL (a secret no event stores).
func Encode(ev Event) (json.RawMessage, error) {
	if h := ev.Header(); h.Event == "" {
		h.Event = TypeOf(ev)
	}
	if p, ok := ev.(*Provisioned); ok && p.ConfigURL != "" {
		c := *p
		c.ConfigURL = ""
		ev = &c
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Header().Event, err)
	}
	return b, nil
}

// TypeOf returns the type of a typed payload, whatever its header says.
func TypeOf(ev Event) Type {
	switch ev.(type) {
	case *Registered:
		return TypeRegistered
	case *Online:
		return TypeOnline
	case *Provisioned:
		return TypeProvisioned
	case *Configured:
		return TypeConfigured
	case *ImageCreated:
		return TypeImageCreated
	case *Decommissioned:
		return TypeDecommissioned
	case *HeartbeatMissed:
		return TypeHeartbeatMissed
	case *RoleChanged:
		return TypeRoleChanged
	case *CertRenewed:
		return TypeCertRenewed
	}
	return ev.Header().Event
}
