package agentapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// DefaultNodeCertLifetime is how long a node certificate is valid unless
// Options say otherwise.
const DefaultNodeCertLifetime = 24 * time.Hour

// errAKChanged: the machine attested with another AK while its request
// for a certificate was checked against the one before.
var errAKChanged = errors.New("the machine attested again with another AK: certify the key with that one")

// IssueCertificate implements AgentService.IssueCertificate: the session
// (the first time) or the current node certificate (a renewal, over
// mTLS) names the machine, whose attested AK must have certified the key over
// this CSR (attest.AK.VerifyNodeKey); the certificate is issued and
// recorded, and a renewal emitted, in one transaction.
func (s *Server) IssueCertificate(ctx context.Context, req *connect.Request[attestationv1.IssueCertificateRequest]) (*connect.Response[attestationv1.IssueCertificateResponse], error) {
	if s.o.CA == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this control plane issues no node certificates: it has no CA"))
	}
	msg := req.Msg
	for _, f := range []struct {
		name  string
		value []byte
	}{
		{"csr", msg.Csr}, {"key_public", msg.KeyPublic}, {"certify_info", msg.CertifyInfo}, {"certify_signature", msg.CertifySignature},
	} {
		if len(f.value) == 0 {
			return nil, invalid("%s is required: a certificate is issued to a key the AK certified for this CSR", f.name)
		}
	}
	c, err := s.authenticate(ctx, req.Header().Get("Authorization"))
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		// Revoking a machine ends its session: say why its agent's
		// renewal fails rather than that it should attest again.
		if revoked := s.revokedKey(ctx, msg); revoked != nil {
			err = revoked
		}
	}
	var revoked *errRevokedCertificate
	if errors.As(err, &revoked) {
		s.log.Warn("certificate renewal refused: machine decommissioned", "machine", revoked.m.ID, "serial", revoked.serial, "reason", revoked.m.DecommissionReason)
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("certificate renewal refused: %w", err))
	}
	if err != nil {
		return nil, err
	}
	log := s.log.With("machine", c.MachineID)
	m, err := s.o.Store.GetMachine(ctx, c.MachineID)
	if err != nil {
		return nil, toConnect(fmt.Errorf("issue a node certificate to machine %s: %w", c.MachineID, err))
	}
	// Over TLS the agent can present the certificate from now on: the
	// session credential, which served the steps before it, ends with
	// its issuance. (Over plaintext, a loopback agent keeps its session.)
	endSession := c.session != nil && listener.OverTLS(ctx)
	key, err := verifyNodeKey(m, msg)
	if err != nil {
		log.Warn("certificate refused", "err", err)
		return nil, toConnect(err)
	}
	var cert *x509.Certificate
	issued, previous, err := s.o.Machines.IssueCertificate(ctx, m.ID, func(tx *store.Tx, cur *store.Machine) (*store.NodeCertificate, error) {
		if !bytes.Equal(cur.AKName, m.AKName) {
			return nil, errAKChanged
		}
		var err error
		if cert, err = s.o.CA.IssueNode(key.Key, cur.ID, cur.EKFingerprint, tx.Now(), s.o.NodeCertLifetime); err != nil {
			return nil, err
		}
		if endSession {
			if err := tx.EndSession(ctx, c.session.TokenHash); err != nil {
				return nil, err
			}
		}
		return &store.NodeCertificate{Serial: pki.Serial(cert), KeyName: key.Name, NotAfter: cert.NotAfter}, nil
	})
	var te *lifecycle.TransitionError
	switch {
	case errors.As(err, &te) && te.From == lifecycle.Decommissioned:
		// Revoked since the session was checked.
		log.Warn("certificate renewal refused: machine decommissioned", "err", err)
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case te != nil || errors.Is(err, errAKChanged):
		log.Warn("certificate refused", "err", err)
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	renewAfter := issued.IssuedAt.Add(issued.NotAfter.Sub(issued.IssuedAt) * 2 / 3)
	if endSession {
		log.Info("session ended: the agent calls with its node certificate from now on", "serial", issued.Serial)
	}
	if previous != nil {
		log.Info("node certificate renewed", "serial", issued.Serial, "not_after", issued.NotAfter, "previous_serial", previous.Serial)
	} else {
		log.Info("node certificate issued", "serial", issued.Serial, "not_after", issued.NotAfter)
	}
	return connect.NewResponse(&attestationv1.IssueCertificateResponse{
		Certificate:   cert.Raw,
		CaCertificate: s.o.CA.Certificate().Raw,
		Serial:        issued.Serial,
		RenewAfter:    timestamppb.New(renewAfter),
		NotAfter:      timestamppb.New(issued.NotAfter),
	}), nil
}

// verifyNodeKey checks the request against the machine's attested AK and
// returns the certified key, or a Connect error naming what failed.
func verifyNodeKey(m *store.Machine, msg *attestationv1.IssueCertificateRequest) (*attest.NodeKey, error) {
	if len(m.AKPublic) == 0 {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(
			"this machine attested without a TPM: a node certificate is only for a key a TPM holds"))
	}
	ak, err := attest.ParseAKPublic(m.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("machine %s: stored AK: %w", m.ID, err)
	}
	key, err := ak.VerifyNodeKey(msg.KeyPublic, msg.CertifyInfo, msg.CertifySignature, msg.Csr)
	if errors.Is(err, attest.ErrMalformed) {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("certificate refused: %w", err))
	}
	return key, nil
}

// revokedKey returns the certificate of a decommissioned machine that
// the certified key had, when the machine's AK certified it for this
// CSR: an agent calling with a session that the revocation ended. Anything
// else returns nil, and the caller's missing session stands.
func (s *Server) revokedKey(ctx context.Context, msg *attestationv1.IssueCertificateRequest) *errRevokedCertificate {
	name, err := attest.Name(msg.KeyPublic)
	if err != nil {
		return nil
	}
	c, err := s.o.Store.NodeCertificateByKey(ctx, name)
	if err != nil {
		return nil
	}
	m, err := s.o.Store.GetMachine(ctx, c.MachineID)
	if err != nil || m.State != lifecycle.Decommissioned {
		return nil
	}
	if _, err := verifyNodeKey(m, msg); err != nil {
		return nil
	}
	return &errRevokedCertificate{serial: c.Serial, m: m}
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}
