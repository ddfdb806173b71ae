package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

func TestMachineByMACAndUUID(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		st := b.fresh(t)
		old := time.Now().Add(-time.Hour)
		for _, m := range []*store.Machine{
			{EKFingerprint: strings.Repeat("01", 32), State: lifecycle.Decommissioned, MACs: []string{"52:54:00:00:00:01"}, RegisteredAt: old},
			{EKFingerprint: strings.Repeat("02", 32), State: lifecycle.Attested, MACs: []string{"52:54:00:00:00:02", "52:54:00:00:00:01"}, SMBIOSUUID: "4c4c4544-0000-0000-0000-000000000002"},
			{EKFingerprint: strings.Repeat("03", 32), State: lifecycle.Registered, MACs: []string{"52:54:00:00:00:0a"}, SMBIOSUUID: "4C4C4544-0000-0000-0000-000000000003"},
			{EKFingerprint: strings.Repeat("04", 32), State: lifecycle.Registered, MACs: []string{"52:54:00:00:00:1_"}},
		} {
			if _, err := st.Update(ctx, func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			name, mac, uuid, wantEK string
		}{
			{name: "one MAC", mac: "52:54:00:00:00:02", wantEK: "02"},
			{name: "newest of two", mac: "52:54:00:00:00:01", wantEK: "02"},
			{name: "upper-case query", mac: "52:54:00:00:00:0A", wantEK: "03"},
			{name: "LIKE wildcards are literal", mac: "52:54:00:00:00:1a"},
			{name: "prefix does not match", mac: "52:54:00:00:00:0"},
			{name: "unknown", mac: "52:54:00:00:00:ff"},
			{name: "uuid", uuid: "4C4C4544-0000-0000-0000-000000000002", wantEK: "02"},
			{name: "uuid stored upper-case", uuid: "4c4c4544-0000-0000-0000-000000000003", wantEK: "03"},
			{name: "empty uuid", uuid: ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				var (
					m   *store.Machine
					err error
				)
				if c.mac != "" {
					m, err = st.MachineByMAC(ctx, c.mac)
				} else {
					m, err = st.MachineBySMBIOSUUID(ctx, c.uuid)
				}
				if c.wantEK == "" {
					if !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("got %v, %v, want ErrNotFound", m, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.Repeat(c.wantEK, 32); m.EKFingerprint != want {
					t.Errorf("got machine %s, want %s", m.EKFingerprint, want)
				}
			})
		}
	})
}
