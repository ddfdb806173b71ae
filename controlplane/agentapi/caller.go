package agentapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/controlplane/store"
)

// caller is an authenticated agent: by its session credential until its
// machine has a node certificate it can present, by that certificate
// (mTLS) from then on.
type caller struct {
	MachineID     string
	EKFingerprint string
	// session is the session credential's; nil for a certificate.
	session *store.Session
	// serial is the certificate's; "" for a session.
	serial string
}

// errRevokedCertificate: a node certificate of a decommissioned machine
// (revoking a machine revokes its certificates at once, not at expiry).
type errRevokedCertificate struct {
	serial string
	m      *store.Machine
}

func (e *errRevokedCertificate) Error() string {
	return fmt.Sprintf("node certificate %s no longer works: machine %s is decommissioned%s; an operator must reinstate it (attestation machines reinstate %s), then it must attest again",
		e.serial, e.m.ID, reasonSuffix(e.m.DecommissionReason), e.m.ID)
}

// errRevokedReinstated: a node certificate revoked when its machine was
// decommissioned, presented after the machine was reinstated; the caller
// is authenticated by its session as if it presented none, and gets a
// new certificate after attesting again.
var errRevokedReinstated = errors.New("node certificate revoked before the machine was reinstated")

// authenticate names the agent calling: by the node certificate its TLS
// connection presented (verified against the daemon's CA in the
// handshake, and here against the record of what was issued and the
// machine's state, on every call), else by its session credential.
func (s *Server) authenticate(ctx context.Context, authorization string) (*caller, error) {
	if cert := listener.PeerCertificate(ctx); cert != nil && s.o.CA != nil {
		c, err := s.byCertificate(ctx, cert)
		if !errors.Is(err, errRevokedReinstated) {
			return c, err
		}
	}
	sess, err := s.session(ctx, authorization)
	if err != nil {
		return nil, err
	}
	return &caller{MachineID: sess.MachineID, EKFingerprint: sess.EKFingerprint, session: sess}, nil
}

// byCertificate authenticates an agent by its node certificate: one this
// control plane issued, not revoked, naming a machine that has its EK and
// is not decommissioned. A certificate superseded by a renewal works
// until it expires (connections opened before the renewal present it).
func (s *Server) byCertificate(ctx context.Context, cert *x509.Certificate) (*caller, error) {
	unauthenticated := func(format string, args ...any) error {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf(format, args...))
	}
	// Verified again, not only in the handshake: the handshake builds the
	// chain with the intermediates the client sends, and checks the
	// validity once for a connection that lives on; VerifyNode takes only
	// what the CA signed itself (a configured CA may have sub-CAs) and
	// checks the validity now.
	id, fp, err := s.o.CA.VerifyNode(cert, time.Now())
	if err != nil {
		return nil, unauthenticated("%v", err)
	}
	serial := pki.Serial(cert)
	rec, err := s.o.Store.NodeCertificateBySerial(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return nil, unauthenticated("node certificate %s is not one this control plane issued", serial)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	m, err := s.o.Store.GetMachine(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (rec.MachineID != m.ID || m.EKFingerprint != fp)) {
		return nil, unauthenticated("node certificate %s does not name a machine this control plane knows by that EK", serial)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	if m.State == lifecycle.Decommissioned {
		return nil, &errRevokedCertificate{serial: serial, m: m}
	}
	if !rec.RevokedAt.IsZero() {
		// Revoked with the machine, which an operator has reinstated
		// since: the certificate proves nothing, the session must.
		return nil, errRevokedReinstated
	}
	return &caller{MachineID: m.ID, EKFingerprint: m.EKFingerprint, serial: serial}, nil
}

// refusal is the Connect error of authenticate's err for an RPC: a
// revoked certificate is unauthenticated (the agent attests again, and
// Register tells it the machine is decommissioned), logged.
func (s *Server) refusal(err error) error {
	var revoked *errRevokedCertificate
	if errors.As(err, &revoked) {
		s.log.Warn("node certificate refused: machine decommissioned", "machine", revoked.m.ID, "serial", revoked.serial, "reason", revoked.m.DecommissionReason)
		return connect.NewError(connect.CodeUnauthenticated, err)
	}
	return err
}
