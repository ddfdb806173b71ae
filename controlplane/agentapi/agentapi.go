// Package agentapi serves the API the booted agent talks to: AgentService
// (Register, Attest, WatchApproval, Heartbeat, IssueCertificate) and GET
// /config/{token}, the one-time config fetch.
//
// Register checks the EK and the AK, applies the EK policy and answers
// with a credential-activation challenge bound to the AK name the daemon
// computed, plus a quote nonce: the challenge, the secret and nonce
// hashed, is sealed into the token the agent answers with, which any
// instance that shares the key can open (challenges.go); it is
// short-lived and answered once. An unknown EK becomes a new machine; a
// known one is not written to until it proves itself. Attest opens the
// challenge, checks the activated secret in constant time and the quote
// (signature, nonce, PCR digest, the role's expected PCR values), and in
// one transaction records the challenge as used (a replay, on any
// instance, is refused), records what the agent reported at Register,
// binds the AK to the EK, moves the machine to attested and gives the
// agent a session credential; a refused answer spends the challenge too.
// WatchApproval, Heartbeat and IssueCertificate take that credential;
// IssueCertificate issues a node certificate to a key the
// machine's TPM holds, as its attested AK certifies (nodecerts.go). Nothing
// here ever trusts a MAC or an IP (the IP recorded is the TCP peer's;
// X-Forwarded-For is ignored).
//
// Errors become Connect codes here, at the edge, and nowhere else.
package agentapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/logging"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var _ attestationv1connect.AgentServiceHandler = (*Server)(nil)

// BasePCRs are the PCRs every quote covers: the firmware and boot loader
// measurements of a PC Client platform.
var BasePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// Options are what the Server is built from.
type Options struct {
	Store    *store.Store
	Machines *machines.Service
	Configs  *configs.Service
	// Policy decides which EKs may register. In allowlist mode, an EK that
	// an operator pre-registered is accepted too.
	Policy attest.Policy
	// AllowNoTPM accepts machines that report no TPM.
	AllowNoTPM bool
	// PCRPolicy holds the expected PCR values by role, then PCR index.
	PCRPolicy map[string]map[int][]byte
	// ChallengeTTL, SessionTTL and HeartbeatInterval default to 60 s, 15
	// min and 30 s.
	ChallengeTTL      time.Duration
	SessionTTL        time.Duration
	HeartbeatInterval time.Duration
	// Committed is notified after every commit; WatchApproval waits on it.
	Committed *events.Signal
	// Stopping is closed when the server shuts down; streams end then.
	Stopping <-chan struct{}
	// ChallengeKey (ChallengeKeySize bytes) seals challenges: every
	// instance over one database must have the same, so that any of them
	// takes the answer to a challenge another issued (the daemon derives
	// it from its config token key, DeriveChallengeKey). Nil: a random
	// key, and only this server answers its challenges.
	ChallengeKey []byte
	// Limits bound Register calls (zero: DefaultLimits).
	Limits Limits
	// CA issues node certificates (nil: IssueCertificate is
	// Unimplemented), each valid for NodeCertLifetime (default
	// DefaultNodeCertLifetime).
	CA               *pki.CA
	NodeCertLifetime time.Duration
	// Registerer receives the agent API's metrics (nil: not registered).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Server implements AgentService.
type Server struct {
	o    Options
	log  *slog.Logger
	pcrs []int
	// challenges seals challenges and opens them.
	challenges *sealer
	admission  *admission
	// otherKeyLogged spaces out the log lines about challenges sealed
	// under another key or unreadable.
	otherKeyLogged logging.Every
}

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Machines == nil || o.Configs == nil {
		return nil, errors.New("agent API: store, machines and configs are required")
	}
	if _, err := attest.ParseMode(string(o.Policy.Mode)); err != nil {
		return nil, fmt.Errorf("agent API: %w", err)
	}
	if o.ChallengeTTL <= 0 {
		o.ChallengeTTL = 60 * time.Second
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 15 * time.Minute
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 30 * time.Second
	}
	if o.NodeCertLifetime <= 0 {
		o.NodeCertLifetime = DefaultNodeCertLifetime
	}
	if o.Committed == nil {
		o.Committed = &events.Signal{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Quote the base PCRs and every PCR a role's policy names.
	pcrs := slices.Clone(BasePCRs)
	for role, want := range o.PCRPolicy {
		for i, v := range want {
			if i < 0 || i > attest.MaxPCR || len(v) != sha256.Size {
				return nil, fmt.Errorf("agent API: PCR policy of role %s: PCR %d: want an index in 0..%d and a 32-byte value", role, i, attest.MaxPCR)
			}
			pcrs = append(pcrs, i)
		}
	}
	slices.Sort(pcrs)
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits
	}
	if o.Limits.RegisterRate > 0 && o.Limits.RegisterBurst < 1 {
		return nil, fmt.Errorf("agent API: a Register rate of %g a second needs a burst of at least 1", o.Limits.RegisterRate)
	}
	key := o.ChallengeKey
	if key == nil {
		key = make([]byte, ChallengeKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("agent API: %w", err)
		}
	}
	sealer, err := newSealer(key)
	if err != nil {
		return nil, fmt.Errorf("agent API: %w", err)
	}
	return &Server{o: o, log: o.Logger, pcrs: slices.Compact(pcrs), challenges: sealer, admission: newAdmission(o.Limits, o.Registerer),
		otherKeyLogged: logging.Every{Interval: time.Second}}, nil
}

// admit refuses a Register from src when it would go over the Register
// rate of src: before any work is done for it (EK checks, database reads
// and writes). The rate bounds the challenges a source can have
// outstanding, and with them the rows their answers leave
// (store.Tx.UseChallenge); an outstanding challenge holds nothing here.
func (s *Server) admit(src netip.Addr) error {
	err := s.admission.allowRegister(src, time.Now())
	if err != nil {
		s.admission.refused.WithLabelValues("rate").Inc()
		if skipped, ok := s.admission.logged.Allow(time.Now()); ok {
			s.log.Warn("registration refused for load", "reason", "rate", "source", src, "not_logged_since_last", skipped, "err", err)
		}
	}
	return err
}

// Register implements AgentService.Register.
func (s *Server) Register(ctx context.Context, req *connect.Request[attestationv1.RegisterRequest]) (*connect.Response[attestationv1.RegisterResponse], error) {
	msg := req.Msg
	reg := machines.SelfRegistration{IP: peerIP(req.Peer().Addr), TPMAvailable: msg.TpmAvailable}
	src := source(reg.IP)
	if err := s.admit(src); err != nil {
		return nil, err
	}
	hw := msg.GetHardware()
	reg.Hardware = events.Hardware{SMBIOSUUID: strings.ToLower(strings.TrimSpace(hw.GetSmbiosUuid())), Serial: hw.GetSerial(), Product: hw.GetProduct()}
	for _, mac := range hw.GetMacs() {
		a, err := net.ParseMAC(mac)
		if err != nil {
			return nil, invalid("hardware.macs: %q is not a MAC address", mac)
		}
		reg.Hardware.MACs = append(reg.Hardware.MACs, a.String())
	}
	if !msg.TpmAvailable {
		return s.registerWithoutTPM(ctx, msg, reg)
	}

	ek, err := attest.ParseEK(msg.EkPublic)
	if err != nil {
		return nil, invalid("ek_public: %v", err)
	}
	fp, err := attest.Fingerprint(ek.Key)
	if err != nil {
		return nil, invalid("ek_public: %v", err)
	}
	ak, err := attest.ParseAKPublic(msg.AkPublic)
	if err != nil {
		return nil, invalid("ak_public: %v", err)
	}
	log := s.log.With("ek", fp)
	old, err := s.o.Store.GetMachineByEK(ctx, fp)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, toConnect(fmt.Errorf("register machine %s: %w", fp, err))
	}
	if old != nil && old.State == lifecycle.Decommissioned {
		err := &machines.DecommissionedError{ID: old.ID, Reason: old.DecommissionReason}
		log.Warn("registration refused: decommissioned EK", "machine", old.ID)
		return nil, toConnect(err)
	}
	if err := s.checkEK(ek.Key, fp, msg.EkCertificate, old); err != nil {
		log.Warn("registration refused by the EK policy", "policy", s.o.Policy.Mode, "err", err)
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	}
	c, err := ek.NewChallenge(ak.Name)
	if err != nil {
		return nil, toConnect(fmt.Errorf("register machine %s: %w", fp, err))
	}
	reg.EKFingerprint = fp
	ch := &challenge{
		tpm:        true,
		akPublic:   msg.AkPublic,
		secretHash: hash(c.Secret),
		nonceHash:  hash(c.Nonce),
		pcrs:       s.pcrs,
	}
	m, created, token, err := s.register(ctx, old, reg, ch)
	if err != nil {
		return nil, toConnect(err)
	}
	log.Info("machine registered", "machine", m.ID, "new", created, "ip", reg.IP, "conflict_with", m.ConflictWith, "challenge", ch.idString())
	return connect.NewResponse(&attestationv1.RegisterResponse{
		MachineId:       m.ID,
		ChallengeId:     token,
		CredentialBlob:  c.CredentialBlob,
		EncryptedSecret: c.EncryptedSecret,
		Nonce:           c.Nonce,
		Pcrs:            uint32s(s.pcrs),
		ExpiresAt:       timestamppb.New(ch.expires),
	}), nil
}

// register records a new machine (old is nil when the EK may be unknown)
// and seals the challenge for it into a token. A known machine is not
// written to: what its agent reported is recorded when it attests.
func (s *Server) register(ctx context.Context, old *store.Machine, reg machines.SelfRegistration, ch *challenge) (m *store.Machine, created bool, token string, err error) {
	if m = old; m == nil {
		if m, created, err = s.o.Machines.SelfRegister(ctx, reg); err != nil {
			return nil, false, "", err
		}
	}
	ch.id = make([]byte, challengeIDSize)
	if _, err := rand.Read(ch.id); err != nil {
		return nil, false, "", err
	}
	ch.machineID, ch.reported = m.ID, reg
	ch.expires = time.Now().Add(s.o.ChallengeTTL).UTC()
	if token, err = s.challenges.seal(ch); err != nil {
		return nil, false, "", fmt.Errorf("register machine %s: %w", m.ID, err)
	}
	return m, created, token, nil
}

// noTPMDomain separates the identities of machines without a TPM from EK
// fingerprints.
const noTPMDomain = "attestation machine without TPM\x00"

// registerWithoutTPM registers a machine that reports no TPM, where policy
// allows it. Such a machine has no key: its identity is derived from its
// SMBIOS UUID (or, without one, its lowest MAC), which anyone can forge,
// and its challenge asks for nothing but the challenge ID back.
func (s *Server) registerWithoutTPM(ctx context.Context, msg *attestationv1.RegisterRequest, reg machines.SelfRegistration) (*connect.Response[attestationv1.RegisterResponse], error) {
	if len(msg.EkPublic) > 0 || len(msg.AkPublic) > 0 || len(msg.EkCertificate) > 0 {
		return nil, invalid("tpm_available is false but an EK or AK is present: set tpm_available when the machine has a TPM")
	}
	if !s.o.AllowNoTPM {
		s.log.Warn("registration refused: no TPM", "ip", reg.IP, "smbios_uuid", reg.Hardware.SMBIOSUUID)
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(
			"this machine reports no TPM and the control plane requires one (attestationd --allow-no-tpm accepts machines without a TPM, which prove nothing)"))
	}
	key := reg.Hardware.SMBIOSUUID
	if key == "" && len(reg.Hardware.MACs) > 0 {
		key = slices.Min(reg.Hardware.MACs)
	}
	if key == "" {
		return nil, invalid("a machine without a TPM must report its SMBIOS UUID or a MAC address: they are its only identity")
	}
	sum := sha256.Sum256([]byte(noTPMDomain + key))
	reg.EKFingerprint = hex.EncodeToString(sum[:])
	ch := &challenge{tpm: false, pcrs: []int{}}
	m, created, token, err := s.register(ctx, nil, reg, ch)
	if err != nil {
		return nil, toConnect(err)
	}
	s.log.Warn("machine without TPM registered; it proves nothing", "machine", m.ID, "new", created, "ip", reg.IP, "challenge", ch.idString())
	return connect.NewResponse(&attestationv1.RegisterResponse{
		MachineId:   m.ID,
		ChallengeId: token,
		Pcrs:        []uint32{},
		ExpiresAt:   timestamppb.New(ch.expires),
	}), nil
}

// checkEK applies the EK policy; in allowlist mode an EK an operator
// pre-registered (old) is accepted too.
func (s *Server) checkEK(ek any, fp string, cert []byte, old *store.Machine) error {
	p := s.o.Policy
	switch p.Mode {
	case attest.ModeVerify:
		if p.Roots == nil {
			return errors.New("EK policy is verify but no EK roots are configured (attestationd --ek-roots DIR): every EK is refused")
		}
	case attest.ModeAllowlist:
		if p.Allowlist[fp] || (old != nil && old.PreRegistered) {
			return nil
		}
		return fmt.Errorf("EK %s is neither on the allowlist (ek_allowlist) nor pre-registered (attestation machines register --ek-fingerprint %s)", fp, fp)
	}
	if err := p.CheckEK(ek, cert); err != nil {
		return fmt.Errorf("EK refused by policy %s: %w", p.Mode, err)
	}
	return nil
}

// Attest implements AgentService.Attest.
func (s *Server) Attest(ctx context.Context, req *connect.Request[attestationv1.AttestRequest]) (*connect.Response[attestationv1.AttestResponse], error) {
	msg := req.Msg
	if msg.ChallengeId == "" {
		return nil, invalid("challenge_id is required: the one Register returned")
	}
	ch, err := s.challenges.open(msg.ChallengeId)
	if err != nil {
		// Another key, or one this control plane sealed but cannot read
		// (a version it does not know): a deployment's fault, logged. An
		// altered token is the agent's.
		if !errors.Is(err, errUnknownChallenge) {
			if skipped, ok := s.otherKeyLogged.Allow(time.Now()); ok {
				s.log.Warn("attestation refused: "+err.Error(), "ip", peerIP(req.Peer().Addr), "not_logged_since_last", skipped)
			}
		}
		return nil, challengeError(err)
	}
	log := s.log.With("machine", ch.machineID, "challenge", ch.idString())
	if !time.Now().Before(ch.expires) {
		log.Warn("attestation refused: challenge expired")
		return nil, challengeError(store.ErrExpired)
	}
	// Answered once: whatever follows, this challenge is spent.
	pcrs, err := s.verify(ch, msg)
	if err != nil {
		return nil, s.refuse(ctx, log, ch, err)
	}

	token, tokenHash, err := machines.NewToken()
	if err != nil {
		return nil, toConnect(err)
	}
	expires := time.Now().Add(s.o.SessionTTL).UTC()
	var (
		pcrErr  error
		akBound bool
	)
	m, configURL, err := s.o.Machines.AttestedWith(ctx, ch.machineID, func(tx *store.Tx, m *store.Machine) error {
		if err := tx.UseChallenge(ctx, ch.id, ch.expires); err != nil {
			return err
		}
		if want := s.o.PCRPolicy[m.Role]; ch.tpm && len(want) > 0 {
			if err := attest.ComparePCRs(want, pcrs); err != nil {
				pcrErr = fmt.Errorf("role %s: %w", m.Role, err)
				return pcrErr
			}
		}
		// What the agent reported counts now that the machine proved
		// itself.
		ch.reported.ApplyTo(m)
		if ch.tpm {
			akBound = len(m.AKName) > 0 && string(m.AKName) != string(ch.ak.Name)
			m.AKPublic, m.AKName = ch.akPublic, ch.ak.Name
		}
		return tx.ReplaceSessions(ctx, &store.Session{
			TokenHash:     tokenHash,
			MachineID:     m.ID,
			EKFingerprint: m.EKFingerprint,
			ExpiresAt:     expires,
		})
	})
	switch {
	case errors.Is(err, store.ErrUsed):
		log.Warn("attestation refused: challenge already used (replay?)")
		return nil, challengeError(err)
	case pcrErr != nil:
		return nil, s.refuse(ctx, log, ch, pcrErr)
	case err != nil:
		// Not attested (decommissioned meanwhile, say): spent all the same.
		if used := s.spend(ctx, ch); errors.Is(used, store.ErrUsed) {
			log.Warn("attestation refused: challenge already used (replay?)")
			return nil, challengeError(used)
		}
		return nil, toConnect(err)
	}
	if akBound {
		log.Info("the machine's AK changed; the new one is bound to its EK", "ek", m.EKFingerprint)
	}
	log.Info("machine attested", "ek", m.EKFingerprint, "state", m.State, "tpm", ch.tpm)
	// A machine approved as it attested (pre-registered) gets its config
	// URL now, as WatchApproval would give it: a request fewer. So does
	// one attesting again, provisioned, its config not fetched yet.
	if configURL == "" {
		if configURL, err = s.o.Machines.ConfigURLOf(ctx, m); err != nil {
			// Attested all the same; WatchApproval will tell the URL.
			log.Warn("config URL not given with the attestation", "err", err)
		}
	}
	return connect.NewResponse(&attestationv1.AttestResponse{
		MachineId:        m.ID,
		State:            string(m.State),
		SessionToken:     token,
		SessionExpiresAt: timestamppb.New(expires),
		ConfigUrl:        configURL,
	}), nil
}

// Heartbeat implements AgentService.Heartbeat.
func (s *Server) Heartbeat(ctx context.Context, req *connect.Request[attestationv1.HeartbeatRequest]) (*connect.Response[attestationv1.HeartbeatResponse], error) {
	c, err := s.authenticate(ctx, req.Header().Get("Authorization"))
	if err != nil {
		return nil, s.refusal(err)
	}
	for _, ip := range req.Msg.Ips {
		if net.ParseIP(ip) == nil {
			return nil, invalid("ips: %q is not an IP address", ip)
		}
	}
	expires := time.Now().Add(s.o.SessionTTL)
	_, err = s.o.Machines.Heartbeat(ctx, c.MachineID, req.Msg.Ips, func(tx *store.Tx, _ *store.Machine) error {
		if c.session == nil {
			return nil // a certificate: nothing to renew
		}
		return tx.RenewSession(ctx, c.session.TokenHash, expires)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("the session has ended: attest again"))
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&attestationv1.HeartbeatResponse{
		NextDeadline: timestamppb.New(time.Now().Add(s.o.HeartbeatInterval)),
	}), nil
}

// watchPoll bounds how long WatchApproval waits between looks when no
// commit wakes it.
const watchPoll = time.Second

// WatchApproval implements AgentService.WatchApproval.
func (s *Server) WatchApproval(ctx context.Context, req *connect.Request[attestationv1.WatchApprovalRequest], stream *connect.ServerStream[attestationv1.WatchApprovalResponse]) error {
	authorization := req.Header().Get("Authorization")
	c, err := s.authenticate(ctx, authorization)
	if err != nil {
		return s.refusal(err)
	}
	var last *attestationv1.WatchApprovalResponse
	// The session is checked again at every look but the first, which
	// follows the check above.
	recheck := false
	for {
		woken := s.o.Committed.C()
		m, err := s.o.Store.GetMachine(ctx, c.MachineID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return toConnect(err)
		}
		resp := &attestationv1.WatchApprovalResponse{State: string(m.State), Hostname: m.Hostname, Role: m.Role, SchematicId: m.SchematicID}
		// A revocation ends the session; the stream that was open says why
		// before it ends.
		if m.State == lifecycle.Decommissioned {
			return stream.Send(resp)
		}
		if recheck {
			if _, err := s.authenticate(ctx, authorization); err != nil {
				return s.refusal(err)
			}
		}
		recheck = true
		if m.State == lifecycle.Provisioned {
			if resp.ConfigUrl, err = s.o.Machines.ConfigURLOf(ctx, m); err != nil {
				return toConnect(err)
			}
			return stream.Send(resp)
		}
		if !proto.Equal(resp, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = resp
		}
		// What was sent goes out now, not when the stream ends.
		api.FlushHeld(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.o.Stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("the control plane is shutting down: reconnect"))
		case <-woken:
		case <-time.After(watchPoll):
		}
	}
}

// refuse refuses an answer to ch that failed its checks (why): the
// challenge is spent, on every instance, and the refusal says why, or that
// the challenge was answered before.
func (s *Server) refuse(ctx context.Context, log *slog.Logger, ch *challenge, why error) error {
	if err := s.spend(ctx, ch); errors.Is(err, store.ErrUsed) {
		log.Warn("attestation refused: challenge already used (replay?)", "err", why)
		return challengeError(err)
	} else if err != nil {
		log.Error("a refused challenge could not be recorded as used", "err", err)
	}
	log.Warn("attestation refused", "err", why)
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("attestation failed: %w", why))
}

// spend records that ch was answered, though not by an attestation; it
// fails with store.ErrUsed when ch was answered before. It does so even
// when the caller has gone: the answer was given.
func (s *Server) spend(ctx context.Context, ch *challenge) error {
	ctx = context.WithoutCancel(ctx)
	_, err := s.o.Store.Update(ctx, func(tx *store.Tx) error { return tx.UseChallenge(ctx, ch.id, ch.expires) })
	return err
}

// session authenticates an agent by its session credential.
func (s *Server) session(ctx context.Context, authorization string) (*store.Session, error) {
	token, ok := strings.CutPrefix(authorization, "Bearer ")
	if token = strings.TrimSpace(token); !ok || token == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated,
			errors.New("no session credential: send 'Authorization: Bearer <session_token>' with the token Attest returned"))
	}
	sess, err := s.o.Store.GetSession(ctx, machines.HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or ended session: attest again"))
	}
	if err != nil {
		return nil, toConnect(err)
	}
	if !time.Now().Before(sess.ExpiresAt) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("the session has expired: attest again"))
	}
	return sess, nil
}

// verify checks an answer to ch and returns the quoted PCR values.
func (s *Server) verify(ch *challenge, msg *attestationv1.AttestRequest) (map[int][]byte, error) {
	if !ch.tpm {
		if len(msg.Secret) > 0 || len(msg.Quote) > 0 || len(msg.QuoteSignature) > 0 || len(msg.PcrValues) > 0 {
			return nil, errors.New("this machine registered without a TPM: send only the challenge_id")
		}
		return nil, nil
	}
	if len(msg.Secret) == 0 || !attest.SecretsEqual(hash(msg.Secret), ch.secretHash) {
		return nil, errors.New("wrong secret: the credential was not activated by the TPM that holds this EK and this AK")
	}
	nonce, err := quoteNonce(msg.Quote)
	if err != nil {
		return nil, err
	}
	if !attest.SecretsEqual(hash(nonce), ch.nonceHash) {
		return nil, errors.New("the quote is not over this challenge's nonce")
	}
	pcrs := make(map[int][]byte, len(msg.PcrValues))
	for i, v := range msg.PcrValues {
		if i > attest.MaxPCR {
			return nil, fmt.Errorf("PCR %d out of range 0..%d", i, attest.MaxPCR)
		}
		pcrs[int(i)] = v
	}
	if err := ch.ak.VerifyQuote(msg.Quote, msg.QuoteSignature, nonce, pcrs); err != nil {
		return nil, err
	}
	var missing []int
	for _, i := range ch.pcrs {
		if _, ok := pcrs[i]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the quote does not cover the requested PCRs %v (it covers %v)", missing, slices.Sorted(maps.Keys(pcrs)))
	}
	return pcrs, nil
}

func hash(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

func uint32s(xs []int) []uint32 {
	out := make([]uint32, len(xs))
	for i, x := range xs {
		out[i] = uint32(x)
	}
	return out
}

// peerIP is the IP of the TCP peer. Headers such as X-Forwarded-For are
// not trusted: anyone can send them.
func peerIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
