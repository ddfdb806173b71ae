package boot_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

func TestResolver(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, m := range []*store.Machine{
		{EKFingerprint: strings.Repeat("01", 32), State: lifecycle.Decommissioned, MACs: []string{"52:54:00:00:00:01"}, SMBIOSUUID: "4c4c4544-0000-0000-0000-000000000001"},
		{EKFingerprint: strings.Repeat("02", 32), State: lifecycle.Provisioned, MACs: []string{"52:54:00:00:00:02"}, SMBIOSUUID: "4c4c4544-0000-0000-0000-000000000002"},
	} {
		if _, err := st.Update(ctx, func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) }); err != nil {
			t.Fatal(err)
		}
	}
	r := &boot.Resolver{Store: st, Policy: boot.Policy{PublicURL: "http://cp:9000"}}
	mac := func(s string) boot.Client {
		m, err := boot.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return boot.Client{MAC: m}
	}
	for _, c := range []struct {
		name   string
		client boot.Client
		want   boot.Action
	}{
		{"decommissioned by MAC", mac("52-54-00-00-00-01"), boot.Refuse},
		{"provisioned by MAC", mac("52:54:00:00:00:02"), boot.LocalDisk},
		{"unknown MAC", mac("52:54:00:00:00:03"), boot.BootAgent},
		{"by UUID when the MAC is unknown", boot.Client{MAC: mac("52:54:00:00:00:03").MAC, UUID: "4c4c4544-0000-0000-0000-000000000001"}, boot.Refuse},
		{"MAC before UUID", boot.Client{MAC: mac("52:54:00:00:00:02").MAC, UUID: "4c4c4544-0000-0000-0000-000000000001"}, boot.LocalDisk},
		{"nothing said", boot.Client{}, boot.BootAgent},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := r.Decide(ctx, c.client)
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != c.want {
				t.Errorf("got %v (%s), want %v", d.Action, d.Reason, c.want)
			}
		})
	}
}
