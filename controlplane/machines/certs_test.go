package machines_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// certificate returns an issue function that makes a certificate with
// the given serial, valid for an hour.
func certificate(serial string) func(*store.Tx, *store.Machine) (*store.NodeCertificate, error) {
	return func(tx *store.Tx, _ *store.Machine) (*store.NodeCertificate, error) {
		return &store.NodeCertificate{Serial: serial, KeyName: []byte("key"), NotAfter: tx.Now().Add(time.Hour)}, nil
	}
}

// TestIssueCertificate: the first certificate emits nothing, the next
// supersedes it and emits node.cert_renewed naming both, a refusal
// changes nothing, and a revocation revokes them.
func TestIssueCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := e.inState(t, lifecycle.Attested, machines.Registration{})
	before := types(e.events(t, m.ID))

	first, previous, err := e.svc.IssueCertificate(ctx, m.ID, certificate("0a"))
	if err != nil || first.Serial != "0a" || first.MachineID != m.ID || previous != nil {
		t.Fatalf("first certificate: %+v, previous %+v, %v; want 0a of %s, no previous", first, previous, err, m.ID)
	}
	if got := types(e.events(t, m.ID)); got != before {
		t.Errorf("events after the first certificate %q, want %q", got, before)
	}

	boom := errors.New("refused")
	if _, _, err := e.svc.IssueCertificate(ctx, m.ID, func(*store.Tx, *store.Machine) (*store.NodeCertificate, error) {
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("refused issue: %v, want %v", err, boom)
	}

	second, previous, err := e.svc.IssueCertificate(ctx, m.ID, certificate("0b"))
	if err != nil || second.Serial != "0b" || previous == nil || previous.Serial != "0a" {
		t.Fatalf("renewal: %+v, previous %+v, %v; want 0b superseding 0a", second, previous, err)
	}
	evs := e.events(t, m.ID)
	if got, want := types(evs), before+" node.cert_renewed"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	ev := decode[*events.CertRenewed](t, evs[len(evs)-1])
	if ev.Serial != "0b" || ev.PreviousSerial != "0a" || !ev.NotAfter.Equal(second.NotAfter) || !ev.PreviousNotAfter.Equal(first.NotAfter) {
		t.Errorf("node.cert_renewed %+v, want 0b (not after %s) superseding 0a (not after %s)", ev, second.NotAfter, first.NotAfter)
	}

	if _, err := e.svc.Revoke(ctx, m.ID, "stolen"); err != nil {
		t.Fatal(err)
	}
	certs, err := e.st.NodeCertificates(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.RevokedAt.IsZero() {
			t.Errorf("certificate %s not revoked with its machine", c.Serial)
		}
	}
}

func TestIssueCertificateRefusedByState(t *testing.T) {
	e := newEnv(t)
	for _, st := range []lifecycle.State{lifecycle.Registered, lifecycle.Decommissioned} {
		t.Run(string(st), func(t *testing.T) {
			m := e.inState(t, st, machines.Registration{})
			called := false
			_, _, err := e.svc.IssueCertificate(t.Context(), m.ID, func(tx *store.Tx, m *store.Machine) (*store.NodeCertificate, error) {
				called = true
				return certificate("0c")(tx, m)
			})
			var te *lifecycle.TransitionError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), fmt.Sprintf("machine is %s", st)) {
				t.Fatalf("got %v, want a transition error naming %s", err, st)
			}
			if called {
				t.Error("the certificate was made for a machine that may not have one")
			}
			if certs, _ := e.st.NodeCertificates(t.Context(), m.ID); len(certs) != 0 {
				t.Errorf("certificates %+v recorded, want none", certs)
			}
		})
	}
}
