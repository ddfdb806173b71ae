package events_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

var (
	t0 = time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
	t1 = t0.Add(-48 * time.Hour)
	t2 = t0.Add(90 * 24 * time.Hour)
)

// samples returns one payload of every type with every field set, so that
// a field lost on the way through JSON shows as a difference.
func samples() map[events.Type]events.Event {
	return map[events.Type]events.Event{
		events.TypeRegistered: &events.Registered{
			IP: "192.0.2.10", MAC: "52:54:00:12:34:56", TPMAvailable: true,
			Hardware: events.Hardware{
				SMBIOSUUID: "4c4c4544-0042-3510-8052-b4c04f4d4433", Serial: "SN123", Product: "PowerEdge R650",
				MACs: []string{"52:54:00:12:34:56", "52:54:00:12:34:57"},
			},
			PreRegistered: true, Reinstated: true, Role: "worker", Hostname: "node-1",
		},
		events.TypeOnline: &events.Online{Hostname: "node-1", Role: "worker", FirstSeen: t1},
		events.TypeProvisioned: &events.Provisioned{
			Hostname: "node-1", Role: "worker", ConfigTokenID: strings.Repeat("0f", 16),
			SchematicID: strings.Repeat("ab", 32), ISOURL: "http://cp:9000/images/x/boot.iso",
		},
		events.TypeConfigured: &events.Configured{Hostname: "node-1", Role: "worker"},
		events.TypeImageCreated: &events.ImageCreated{
			SchematicID: strings.Repeat("cd", 32), ISOURL: "http://cp:9000/images/y/boot.iso",
			SHA256: strings.Repeat("ef", 32), Size: 123456789,
		},
		events.TypeDecommissioned:  &events.Decommissioned{Hostname: "node-1", Role: "worker", Reason: "disk failed"},
		events.TypeHeartbeatMissed: &events.HeartbeatMissed{Hostname: "node-1", Role: "worker", LastHeartbeat: t1, Deadline: t0},
		events.TypeRoleChanged:     &events.RoleChanged{Hostname: "node-1", OldRole: "worker", NewRole: "control-plane"},
		events.TypeCertRenewed:     &events.CertRenewed{Hostname: "node-1", Serial: "0a1b2c", NotAfter: t2, PreviousSerial: "3d4e5f", PreviousNotAfter: t1},
	}
}

func TestTypes(t *testing.T) {
	types := events.Types()
	if len(types) != 9 {
		t.Fatalf("Types() has %d types, want 9", len(types))
	}
	seen := map[events.Type]bool{}
	for _, typ := range types {
		if seen[typ] {
			t.Errorf("Types() lists %s twice", typ)
		}
		seen[typ] = true
		if !typ.Valid() {
			t.Errorf("%s.Valid() = false", typ)
		}
		ev, err := events.New(typ)
		if err != nil {
			t.Fatalf("New(%s): %v", typ, err)
		}
		if got := events.TypeOf(ev); got != typ {
			t.Errorf("TypeOf(New(%s)) = %s", typ, got)
		}
		if _, ok := samples()[typ]; !ok {
			t.Errorf("no sample payload for %s", typ)
		}
	}
	for _, bad := range []events.Type{"", "node.unknown", "NODE.ONLINE"} {
		if bad.Valid() {
			t.Errorf("%q.Valid() = true", bad)
		}
		if _, err := events.New(bad); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
}

// TestEncodeDropsConfigURL: a config URL, a bearer secret, never goes
// into an encoded (stored) event, and the event encoded is left as it was.
func TestEncodeDropsConfigURL(t *testing.T) {
	ev := &events.Provisioned{Hostname: "node-1", Role: "worker", ConfigTokenID: "0f0f", ConfigURL: "http://cp:9000/config/secret"}
	b, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secret") || strings.Contains(string(b), "config_url") {
		t.Errorf("encoded %s, want no config_url", b)
	}
	if !strings.Contains(string(b), `"config_token_id":"0f0f"`) {
		t.Errorf("encoded %s, want the config token ID", b)
	}
	if ev.ConfigURL == "" || ev.Event != events.TypeProvisioned {
		t.Errorf("Encode changed the event's URL to %q (type %q)", ev.ConfigURL, ev.Event)
	}
}

// TestEncodeDecode round-trips every type through Encode and an envelope,
// as the outbox stores it.
func TestEncodeDecode(t *testing.T) {
	for typ, ev := range samples() {
		t.Run(string(typ), func(t *testing.T) {
			payload, err := events.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.Header().Event; got != typ {
				t.Errorf("Encode left the header type %q, want %q", got, typ)
			}
			var fields map[string]any
			if err := json.Unmarshal(payload, &fields); err != nil {
				t.Fatalf("payload is not a JSON object: %v", err)
			}
			if fields["event"] != string(typ) {
				t.Errorf("payload event = %v, want %s", fields["event"], typ)
			}
			env := events.Envelope{
				Seq: 42, ID: "7d7b9a8e-4f2c-4d39-9c3c-0a1f2e3d4c5b", Type: typ,
				MachineID: "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a", EKFingerprint: strings.Repeat("0f", 32),
				Time: t0, Payload: payload,
			}
			got, err := env.Decode()
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if reflect.TypeOf(got) != reflect.TypeOf(ev) {
				t.Fatalf("Decode returned %T, want %T", got, ev)
			}
			h := got.Header()
			wantHeader := events.Common{
				Event: typ, ID: env.ID, Seq: env.Seq, MachineID: env.MachineID,
				EKFingerprint: env.EKFingerprint, Timestamp: t0, Raw: payload,
			}
			if !reflect.DeepEqual(*h, wantHeader) {
				t.Errorf("header = %+v\nwant %+v", *h, wantHeader)
			}
			if string(h.Raw) != string(payload) {
				t.Errorf("Raw = %s, want the stored payload %s", h.Raw, payload)
			}
			// The payload's own fields survive unchanged.
			*ev.Header() = wantHeader
			if !reflect.DeepEqual(got, ev) {
				t.Errorf("decoded %+v\nwant    %+v", got, ev)
			}
		})
	}
}

// TestEmitDecode writes every type through a store transaction and reads
// it back from the outbox: the envelope columns fill Common.
func TestEmitDecode(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	m := &store.Machine{EKFingerprint: strings.Repeat("a1", 32), State: lifecycle.Registered}
	want := samples()
	for _, typ := range events.Types() {
		_, err := st.Update(ctx, func(tx *store.Tx) error {
			if m.ID == "" {
				if err := tx.InsertMachine(ctx, m); err != nil {
					return err
				}
			}
			return tx.Emit(ctx, m, want[typ])
		})
		if err != nil {
			t.Fatalf("emit %s: %v", typ, err)
		}
	}
	envs, err := st.EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != len(want) {
		t.Fatalf("outbox has %d events, want %d", len(envs), len(want))
	}
	for i, env := range envs {
		typ := events.Types()[i]
		if env.Type != typ {
			t.Fatalf("event %d is %s, want %s", i, env.Type, typ)
		}
		got, err := env.Decode()
		if err != nil {
			t.Fatalf("decode %s: %v", typ, err)
		}
		h := got.Header()
		if h.Event != typ || h.ID == "" || h.ID != env.ID || h.Seq != env.Seq || h.Seq == 0 {
			t.Errorf("%s: header event=%q id=%q seq=%d, want %s, %q, %d", typ, h.Event, h.ID, h.Seq, typ, env.ID, env.Seq)
		}
		if h.MachineID != m.ID || h.EKFingerprint != m.EKFingerprint {
			t.Errorf("%s: header machine=%q ek=%q, want %q, %q", typ, h.MachineID, h.EKFingerprint, m.ID, m.EKFingerprint)
		}
		if h.Timestamp.IsZero() || !h.Timestamp.Equal(env.Time) {
			t.Errorf("%s: header timestamp %v, want the commit time %v", typ, h.Timestamp, env.Time)
		}
		if len(h.Raw) == 0 || string(h.Raw) != string(env.Payload) {
			t.Errorf("%s: Raw = %s, want the stored payload", typ, h.Raw)
		}
		// Emit stamped the header of the value it was given; with that,
		// the decoded payload equals what was emitted.
		w := want[typ]
		*w.Header() = *h
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: decoded %+v\nwant %+v", typ, got, w)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  events.Envelope
		want string
	}{
		{"unknown type", events.Envelope{Type: "node.exploded", Payload: []byte(`{}`)}, "unknown event type"},
		{"bad json", events.Envelope{Seq: 7, Type: events.TypeOnline, Payload: []byte(`{"first_seen":`)}, "decode node.online event 7"},
		{"wrong field type", events.Envelope{Seq: 8, Type: events.TypeImageCreated, Payload: []byte(`{"size":"big"}`)}, "decode node.image_created event 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.env.Decode()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func openStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
