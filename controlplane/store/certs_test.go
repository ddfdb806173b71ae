package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// TestNodeCertificates: a machine has one live certificate; a new one
// supersedes it, revoking the machine revokes them all, an expired one is
// not live, and nothing is deleted.
func TestNodeCertificates(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		m := &store.Machine{EKFingerprint: strings.Repeat("cd", 32), State: lifecycle.Attested}
		key := []byte("\x00\x0bkey name")
		update := func(fn func(*store.Tx) error) {
			t.Helper()
			if _, err := st.Update(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		live := func() *store.NodeCertificate {
			t.Helper()
			var c *store.NodeCertificate
			update(func(tx *store.Tx) error {
				var err error
				if c, err = tx.LiveNodeCertificate(ctx, m.ID); errors.Is(err, store.ErrNotFound) {
					return nil
				}
				return err
			})
			return c
		}
		update(func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) })
		if c := live(); c != nil {
			t.Fatalf("a new machine has live certificate %+v", c)
		}

		issue := func(serial string, lifetime time.Duration) {
			t.Helper()
			update(func(tx *store.Tx) error {
				return tx.InsertNodeCertificate(ctx, &store.NodeCertificate{
					Serial: serial, MachineID: m.ID, KeyName: key, NotAfter: tx.Now().Add(lifetime),
				})
			})
		}
		issue("01", time.Hour)
		if c := live(); c == nil || c.Serial != "01" || c.IssuedAt.IsZero() {
			t.Fatalf("live certificate %+v, want 01 with its issue time", c)
		}
		issue("02", time.Hour)
		if c := live(); c == nil || c.Serial != "02" {
			t.Fatalf("live certificate %+v, want 02", c)
		}
		if c, err := st.NodeCertificateByKey(ctx, key); err != nil || c.Serial != "02" {
			t.Fatalf("NodeCertificateByKey = %+v, %v; want 02", c, err)
		}
		if _, err := st.NodeCertificateByKey(ctx, []byte("another key")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("NodeCertificateByKey(another key) = %v, want ErrNotFound", err)
		}

		update(func(tx *store.Tx) error { return tx.RevokeNodeCertificates(ctx, m.ID) })
		if c := live(); c != nil {
			t.Fatalf("live certificate %+v after the revocation, want none", c)
		}
		issue("03", -time.Second) // expired at once
		if c := live(); c != nil {
			t.Fatalf("live certificate %+v, want none: 03 has expired", c)
		}

		all, err := st.NodeCertificates(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range all {
			state := "live"
			switch {
			case !c.RevokedAt.IsZero():
				state = "revoked"
			case !c.SupersededAt.IsZero():
				state = "superseded"
			}
			got = append(got, c.Serial+" "+state)
		}
		// 01 was superseded by 02 and revoked with it.
		if want := "03 live, 02 revoked, 01 revoked"; strings.Join(got, ", ") != want {
			t.Errorf("certificates %q, want %q", strings.Join(got, ", "), want)
		}
		if all[2].SupersededAt.IsZero() {
			t.Error("01 was not marked superseded")
		}
	})
}
