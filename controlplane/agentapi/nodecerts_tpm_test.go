//go:build cgo

package agentapi_test

// Node certificates with the agent's TPM package on the simulator: a
// certificate for the node key, its renewal, and every way a request can
// fail to prove that the key is the machine's, each refused with what
// failed and nothing recorded.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-tpm/tpm2"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/agent/tpm/tpmtest"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func TestIssueCertificate(t *testing.T) {
	lifetime := 6 * time.Hour
	h := start(t, func(c *config.Config) { c.NodeCertLifetime = config.Duration(lifetime) })
	a := boot(t, "simulator")
	ch, attested := h.enroll(t, a, nil)
	id := ch.MachineId

	first, err := h.issueCertificate(t, attested.SessionToken, certify(t, a, id))
	if err != nil {
		t.Fatalf("IssueCertificate: %v", err)
	}
	wantNodeCertificate(t, first, a, id, lifetime)
	if got, want := h.eventTypes(t, id), "registered online"; got != want {
		t.Errorf("events after the first certificate %q, want %q", got, want)
	}

	// Renewal: the key certified again, for a new CSR.
	second, err := h.issueCertificate(t, attested.SessionToken, certify(t, a, id))
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	wantNodeCertificate(t, second, a, id, lifetime)
	if second.Serial == first.Serial {
		t.Fatal("the renewal has the first certificate's serial")
	}
	evs := h.eventList(t, id)
	last := evs[len(evs)-1]
	if last.Type != "node.cert_renewed" {
		t.Fatalf("last event %s, want node.cert_renewed", last.Type)
	}
	p := last.Payload.AsMap()
	for key, want := range map[string]string{
		"serial":             second.Serial,
		"previous_serial":    first.Serial,
		"not_after":          second.NotAfter.AsTime().Format(time.RFC3339Nano),
		"previous_not_after": first.NotAfter.AsTime().Format(time.RFC3339Nano),
	} {
		got, _ := p[key].(string)
		if key != "serial" && key != "previous_serial" {
			tm, err := time.Parse(time.RFC3339Nano, got)
			if err != nil {
				t.Errorf("node.cert_renewed %s = %q: %v", key, got, err)
				continue
			}
			got = tm.UTC().Format(time.RFC3339Nano)
		}
		if got != want {
			t.Errorf("node.cert_renewed %s = %q, want %q", key, got, want)
		}
	}
}

// TestIssueCertificateRefusals: an exportable key, a decrypting key, a
// certification replayed for another CSR, a CSR of another key, malformed
// or missing fields, no session, a certification by another TPM's AK:
// each refused with what failed; none records a certificate (the first
// one issued afterwards is no renewal).
//
// The simulator holds three objects: the EK, the AK and one more. The
// test's own keys come first, each flushed after its case, before the
// node key takes that slot.
func TestIssueCertificateRefusals(t *testing.T) {
	h := start(t, nil)
	a, tr := bootTPM(t, "simulator:1")
	ch, attested := h.enroll(t, a, nil)
	id, session := ch.MachineId, attested.SessionToken
	refused := func(name, session string, req func(t *testing.T) *agenttpm.CertificateRequest, code connect.Code, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			_, err := h.issueCertificate(t, session, req(t))
			wantCode(t, err, code, want)
		})
	}

	// Keys the agent never makes, certified by the machine's AK.
	ak := tpmtest.Named(a.AK().Handle, a.AK().Name)
	byAK := func(change func(*tpm2.TPMAObject), label string) func(t *testing.T) *agenttpm.CertificateRequest {
		return func(t *testing.T) *agenttpm.CertificateRequest {
			attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true}
			change(&attrs)
			key := tpmtest.NewKey(t, tr, attrs, label)
			csr := tpmtest.CSR(t, key)
			info, sig := tpmtest.Certify(t, tr, key.Handle, ak, csr)
			return &agenttpm.CertificateRequest{CSR: csr, KeyPublic: key.PublicArea, CertifyInfo: info, CertifySignature: sig}
		}
	}
	refused("exportable key", session, byAK(func(a *tpm2.TPMAObject) { a.FixedTPM, a.FixedParent = false, false }, "exportable"),
		connect.CodePermissionDenied, "the key is exportable (fixedTPM not set)")
	refused("decrypting key", session, byAK(func(a *tpm2.TPMAObject) { a.Decrypt = true }, "decrypts"),
		connect.CodePermissionDenied, "the key can decrypt")

	// The node key, with something else wrong.
	changed := func(change func(*testing.T, *agenttpm.CertificateRequest)) func(t *testing.T) *agenttpm.CertificateRequest {
		return func(t *testing.T) *agenttpm.CertificateRequest {
			r := certify(t, a, id)
			change(t, r)
			return r
		}
	}
	refused("certification replayed for another CSR", session, changed(func(t *testing.T, r *agenttpm.CertificateRequest) { r.CSR = certify(t, a, id).CSR }),
		connect.CodePermissionDenied, "not for this CSR")
	refused("CSR of another key", session, func(t *testing.T) *agenttpm.CertificateRequest {
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := a.NodeKey()
		csr := tpmtest.CSR(t, other)
		info, sig := tpmtest.Certify(t, tr, tpmtest.Named(k.Handle(), k.Name()), ak, csr)
		return &agenttpm.CertificateRequest{CSR: csr, KeyPublic: k.PublicArea(), CertifyInfo: info, CertifySignature: sig}
	}, connect.CodePermissionDenied, "the CSR's key is not the certified key")
	refused("key_public not a TPMT_PUBLIC", session, changed(func(_ *testing.T, r *agenttpm.CertificateRequest) { r.KeyPublic = []byte("not a key") }),
		connect.CodeInvalidArgument, "TPMT_PUBLIC")
	refused("no CSR", session, changed(func(_ *testing.T, r *agenttpm.CertificateRequest) { r.CSR = nil }),
		connect.CodeInvalidArgument, "csr is required")
	refused("no session", "", changed(func(*testing.T, *agenttpm.CertificateRequest) {}),
		connect.CodeUnauthenticated, "no session credential")
	refused("unknown session", "not-a-session", changed(func(*testing.T, *agenttpm.CertificateRequest) {}),
		connect.CodeUnauthenticated, "unknown or ended session")

	// Another machine's TPM certifies its own node key, sent with this
	// machine's session.
	a.Close()
	b := boot(t, "simulator:2")
	refused("certified by another TPM's AK", session, func(t *testing.T) *agenttpm.CertificateRequest { return certify(t, b, id) },
		connect.CodePermissionDenied, "the certification is not signed by this machine's AK")
	b.Close()

	a = boot(t, "simulator:1") // the same machine, booted again
	if _, err := h.issueCertificate(t, session, certify(t, a, id)); err != nil {
		t.Fatalf("IssueCertificate after the refusals: %v", err)
	}
	if got, want := h.eventTypes(t, id), "registered online"; got != want {
		t.Errorf("events %q, want %q: a refused request recorded a certificate", got, want)
	}
}

// TestRenewalOfRevokedMachine: revoking a machine ends its session and
// revokes its certificates; its agent's renewal is refused, saying so,
// and the daemon logs it.
func TestRenewalOfRevokedMachine(t *testing.T) {
	var l logs
	h := startWith(t, daemontest.Options{Logger: l.logger()}, nil)
	a := boot(t, "simulator")
	ch, attested := h.enroll(t, a, nil)
	id := ch.MachineId
	issued, err := h.issueCertificate(t, attested.SessionToken, certify(t, a, id))
	if err != nil {
		t.Fatalf("IssueCertificate: %v", err)
	}
	if _, err := h.machines.RevokeMachine(t.Context(), connect.NewRequest(&attestationv1.RevokeMachineRequest{Id: id, Reason: "stolen"})); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	before := h.eventTypes(t, id)

	_, err = h.issueCertificate(t, attested.SessionToken, certify(t, a, id))
	wantCode(t, err, connect.CodeFailedPrecondition, "certificate renewal refused", "node certificate "+issued.Serial+" no longer works", "decommissioned (stolen)", "reinstate")
	if !strings.Contains(l.String(), "certificate renewal refused: machine decommissioned") {
		t.Errorf("the daemon did not log the refusal; its log:\n%s", l.String())
	}
	if got := h.eventTypes(t, id); got != before {
		t.Errorf("events %q after the refused renewal, want %q", got, before)
	}
	// Without a session at all, the certified key's certificate still
	// names the decommissioned machine.
	_, err = h.issueCertificate(t, "", certify(t, a, id))
	wantCode(t, err, connect.CodeFailedPrecondition, "certificate renewal refused")
}
