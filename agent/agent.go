package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/agent/hardware"
	"github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/internal/atomicfile"
	"github.com/attestation/attestation/internal/version"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// callTimeout bounds each unary call to the control plane.
const callTimeout = 30 * time.Second

// maxConfig bounds the config the agent accepts.
const maxConfig = 16 << 20

// Run takes the machine through the attestation protocol: it opens the
// TPM, registers, answers the challenge, waits for approval, fetches the
// one-time config and writes it to cfg.ConfigOut, then heartbeats until
// ctx is done (or returns once the config is written, with cfg.Once).
//
// Failures that may pass are retried: the control plane being
// unreachable or overloaded with Backoff cfg.Retry, a refusal an operator
// can lift (a decommissioned machine, a policy that rejects this TPM)
// with the slower cfg.SlowRetry. A session the control plane no longer
// knows (it restarted, or the session expired) is replaced by registering
// and attesting again. Run returns an error for a bad Config, for a
// failure that trying again cannot fix (a TPM that is not a device or may
// not be opened, a required TPM missing, a registration the control plane
// refuses as malformed, a server that does not serve the agent API), or
// when ctx ends before the config was written; otherwise nil once ctx is
// done. (As /init, RunInit runs it again.)
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	cert := &nodeCert{}
	httpClient, err := cfg.client(cert.clientCertificate)
	if err != nil {
		return err
	}
	if cfg.HTTPClient == nil {
		httpClient.Transport = refusingRoundTripper{rt: httpClient.Transport, cert: cert, log: cfg.Logger}
	}
	a := &agent{
		cfg:  cfg,
		log:  cfg.Logger,
		http: httpClient,
		api:  attestationv1connect.NewAgentServiceClient(httpClient, cfg.Server),
		hw:   hardware.Collector{Root: cfg.SysRoot},
		cert: cert,
	}
	a.fast.b, a.slow.b, a.rejected.b, a.gone.b = cfg.Retry, cfg.SlowRetry, cfg.Retry, cfg.Retry
	a.log.Info("agent starting", "version", version.String(), "server", cfg.Server, "tpm", cfg.TPM, "config_out", cfg.ConfigOut)
	if err := a.openTPM(ctx); err != nil {
		return err
	}
	defer func() {
		if a.tpm != nil {
			a.tpm.Close()
		}
	}()
	// The node certificate is kept from the first attestation on, beside
	// the rest, and stops before the TPM is closed.
	certCtx, stopCerts := context.WithCancel(ctx)
	var certs sync.WaitGroup
	defer func() {
		stopCerts()
		certs.Wait()
	}()

	configured, enrolled := false, false
	for !configured {
		if !enrolled {
			if err := a.enroll(ctx); err != nil {
				return err
			}
			enrolled = true
			if a.tpm != nil && !cfg.Once && !a.renewing {
				a.renewing = true
				// Before anything else: over TLS, the session ends when
				// the certificate is issued, and what follows is called
				// with the certificate.
				first := a.firstCertificate(ctx)
				certs.Go(func() { a.renewCertificates(certCtx, first) })
			} else {
				a.certifyAgain(ctx)
			}
		}
		configURL, err := a.attestedURL, error(nil)
		if a.attestedURL != "" {
			a.attestedURL = "" // spent or not, a retry watches for a fresh one
			a.log.Info("approved as attested", "machine", a.machineID, "config_url", redactURL(configURL))
		} else {
			configURL, err = a.waitApproval(ctx)
		}
		if errors.Is(err, errDecommissioned) || errors.Is(err, errReenroll) {
			enrolled = false
			continue
		}
		if errors.Is(err, errNothingToFetch) {
			a.log.Warn("nothing to fetch", "machine", a.machineID, "err", err)
			if cfg.Once {
				return err
			}
			break
		}
		if err != nil {
			return err
		}
		body, err := a.fetchConfig(ctx, configURL)
		if errors.Is(err, errConfigGone) {
			// Each approval report mints a new URL and voids the older
			// ones: watching again brings a fresh one while the machine
			// is still waiting for its config.
			d := a.gone.next()
			a.log.Error("config not available", "config_url", redactURL(configURL), "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return fmt.Errorf("stopped before the config was written: %w", ctx.Err())
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := a.writeConfig(ctx, body); err != nil {
			return err
		}
		configured = true
	}
	if cfg.Once {
		return nil
	}
	return a.heartbeat(ctx)
}

// Sentinel outcomes of the steps.
var (
	errDecommissioned = errors.New("machine is decommissioned")
	errReenroll       = errors.New("session rejected")
	errConfigGone     = errors.New("config token already used, expired or unknown")
	errStaleChallenge = errors.New("challenge expired or spent")
	// errNothingToFetch: the machine is provisioned and its config was
	// fetched already (by an earlier boot, or by someone else).
	errNothingToFetch = errors.New("the machine is provisioned and its one-time config was fetched already")
)

type agent struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client
	api  attestationv1connect.AgentServiceClient
	hw   hardware.Collector

	tpm *tpm.Attester // nil without a TPM

	// fast and slow count consecutive failures, for backoff; rejected
	// counts sessions refused one after another, so that a control plane
	// that keeps refusing fresh sessions is not hammered.
	fast, slow, rejected retrier
	// gone counts config URLs that turned out spent, one after another.
	gone retrier

	// cert is the node certificate (certs.go); renewing says whether
	// renewCertificates runs.
	cert     *nodeCert
	renewing bool

	// attestedURL is the config URL the last attestation answered with
	// (a machine approved as it attested), for the main loop to fetch
	// rather than watch for approval; "" once taken or when none came.
	attestedURL string

	// machineID and token are written by attestOnce; mu guards them
	// for the other goroutines, which read them through session.
	mu        sync.Mutex
	machineID string
	token     string
}

// session returns the session token and the machine ID, for a goroutine
// beside the main loop.
func (a *agent) session() (token, machineID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token, a.machineID
}

// machine returns the machine ID, for a goroutine beside the main loop.
func (a *agent) machine() string {
	_, id := a.session()
	return id
}

// openTPM opens the TPM and reads its keys. No TPM at all is not an error
// (the control plane decides); a TPM that fails is retried, unless
// retrying cannot help (tpm.Permanent).
func (a *agent) openTPM(ctx context.Context) error {
	r := retrier{b: a.cfg.Retry}
	for {
		t, err := tpm.Open(a.cfg.TPM)
		if errors.Is(err, tpm.ErrNoTPM) && a.cfg.RequireTPM {
			return fmt.Errorf("no TPM found at %s, and this machine's image requires one (attestation.require_tpm): not registering", a.cfg.TPM)
		}
		if errors.Is(err, tpm.ErrNoTPM) {
			a.log.Warn("no TPM found at "+a.cfg.TPM+": registering with tpm_available=false", "spec", a.cfg.TPM)
			return nil
		}
		if err == nil {
			a.log.Info("tpm opened", "spec", a.cfg.TPM)
			var att *tpm.Attester
			if att, err = tpm.New(t, tpm.Options{}); err == nil {
				a.tpm = att
				ek := att.EK()
				a.log.Info("ek read", "fingerprint", ek.Fingerprint, "cert", ek.Certificate != nil)
				if ek.CertificateError != nil {
					a.log.Warn("ek certificate unreadable", "err", ek.CertificateError)
				}
				a.log.Info("ak created", "name", fmt.Sprintf("%x", att.AK().Name))
				return nil
			}
			t.Close()
		} else if tpm.Permanent(err) {
			return err
		}
		d := r.next()
		a.log.Error("tpm failed", "spec", a.cfg.TPM, "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return fmt.Errorf("open TPM %s: %w (stopped: %w)", a.cfg.TPM, err, ctx.Err())
		}
	}
}

// enroll registers and attests until it has a session, or the control
// plane refuses for good.
func (a *agent) enroll(ctx context.Context) error {
	for {
		err := a.attestOnce(ctx)
		if err == nil {
			a.fast.reset()
			a.slow.reset()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stopped before the config was written: %w", ctx.Err())
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnimplemented:
			return fmt.Errorf("%s does not serve the agent API (is it the control plane's URL?): %w", a.cfg.Server, err)
		case connect.CodeInvalidArgument:
			// This agent and this control plane disagree on the protocol,
			// or the machine reports too little to be told apart: the
			// same request would be refused again.
			return fmt.Errorf("the control plane refused the registration as malformed: %w", err)
		}
		if !a.backoff(ctx, "registration failed", err) {
			return fmt.Errorf("stopped before the config was written: %w", ctx.Err())
		}
	}
}

// backoff logs a failed step and waits: slowly when the control plane
// refused, quickly when it could not be reached. It reports whether the
// wait ended before ctx.
func (a *agent) backoff(ctx context.Context, msg string, err error) bool {
	code := connect.CodeOf(err)
	var d time.Duration
	switch {
	case errors.Is(err, errStaleChallenge):
		d = a.fast.next()
		a.log.Warn(msg, "code", code.String(), "err", err, "retry_in", d.Round(time.Millisecond))
		return sleep(ctx, d)
	}
	switch code {
	case connect.CodeFailedPrecondition, connect.CodePermissionDenied,
		connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeUnauthenticated:
		d = a.slow.next()
		a.log.Error(msg+": refused by the control plane", "code", code.String(), "err", err, "retry_in", d.Round(time.Millisecond))
	default:
		d = a.fast.next()
		a.log.Warn(msg, "err", err, "retry_in", d.Round(time.Millisecond))
	}
	return sleep(ctx, d)
}

// attestOnce is one Register + Attest exchange.
func (a *agent) attestOnce(ctx context.Context) error {
	info := a.hw.Collect()
	req := &attestationv1.RegisterRequest{
		Hardware: &attestationv1.Hardware{
			SmbiosUuid: info.SMBIOSUUID,
			Serial:     info.Serial,
			Product:    info.Product,
			Macs:       info.MACs(),
			Ips:        info.IPs(),
		},
		AgentVersion: version.String(),
		TpmAvailable: a.tpm != nil,
	}
	if a.tpm != nil {
		ek, ak := a.tpm.EK(), a.tpm.AK()
		req.EkPublic, req.EkCertificate, req.AkPublic = ek.Public, ek.Certificate, ak.Public
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	reg, err := a.api.Register(cctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	ch := reg.Msg
	a.mu.Lock()
	a.machineID = ch.GetMachineId()
	a.mu.Unlock()
	a.log.Info("registered", "machine", ch.GetMachineId(), "challenge", ch.GetChallengeId(),
		"macs", fmt.Sprint(info.MACs()), "smbios_uuid", info.SMBIOSUUID)

	att := &attestationv1.AttestRequest{ChallengeId: ch.GetChallengeId()}
	if len(ch.GetCredentialBlob()) > 0 || len(ch.GetNonce()) > 0 {
		if a.tpm == nil {
			return errors.New("the control plane sent a TPM challenge but this machine has no TPM")
		}
		secret, err := a.tpm.ActivateCredential(ch.GetCredentialBlob(), ch.GetEncryptedSecret())
		if err != nil {
			return fmt.Errorf("answer challenge %s: %w", ch.GetChallengeId(), err)
		}
		a.log.Info("credential activated", "challenge", ch.GetChallengeId())
		pcrs := a.cfg.PCRs
		if len(ch.GetPcrs()) > 0 {
			pcrs = make([]int, len(ch.GetPcrs()))
			for i, p := range ch.GetPcrs() {
				pcrs[i] = int(p)
			}
		}
		quote, sig, values, err := a.tpm.Quote(ch.GetNonce(), pcrs)
		if err != nil {
			return fmt.Errorf("answer challenge %s: %w", ch.GetChallengeId(), err)
		}
		eventLog, err := tpm.ReadEventLog(a.cfg.EventLog)
		if err != nil {
			// The quote stands without it; the control plane decides.
			a.log.Warn("event log not sent", "err", err)
		}
		att.Secret, att.Quote, att.QuoteSignature, att.EventLog = secret, quote, sig, eventLog
		att.PcrValues = make(map[uint32][]byte, len(values))
		for p, v := range values {
			att.PcrValues[uint32(p)] = v
		}
		a.log.Info("quote sent", "pcrs", formatPCRs(pcrs), "event_log_bytes", len(eventLog))
	}
	cctx2, cancel2 := context.WithTimeout(ctx, callTimeout)
	defer cancel2()
	res, err := a.api.Attest(cctx2, connect.NewRequest(att))
	if err != nil {
		if c := connect.CodeOf(err); c == connect.CodeFailedPrecondition || c == connect.CodeNotFound {
			// The challenge expired or was spent: a new Register fixes it.
			return fmt.Errorf("attest: %w: %w", errStaleChallenge, err)
		}
		return fmt.Errorf("attest: %w", err)
	}
	a.mu.Lock()
	a.machineID, a.token = res.Msg.GetMachineId(), res.Msg.GetSessionToken()
	a.attestedURL = res.Msg.GetConfigUrl()
	if a.machineID == "" {
		a.machineID = ch.GetMachineId()
	}
	a.mu.Unlock()
	a.log.Info("attested", "machine", a.machineID, "state", res.Msg.GetState(),
		"session_expires_at", res.Msg.GetSessionExpiresAt().AsTime().Format(time.RFC3339))
	return nil
}

func (a *agent) authorize(h http.Header) {
	h.Set("Authorization", "Bearer "+a.token)
}

// streamEndWait bounds how long the agent reads the approval stream after
// the config URL, for the end the control plane sends with it.
const streamEndWait = 2 * time.Second

// waitApproval watches the machine's state until it is approved and
// returns the config URL. It reconnects when the stream breaks, and
// returns errReenroll when the session is rejected, errDecommissioned when
// the machine is decommissioned (after waiting SlowRetry).
func (a *agent) waitApproval(ctx context.Context) (string, error) {
	for {
		a.log.Info("waiting for approval", "machine", a.machineID)
		req := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
		a.authorize(req.Header())
		sctx, cancel := context.WithCancel(ctx)
		// Approval can take days: heartbeats keep the session alive
		// meanwhile (the control plane renews it on each).
		go a.keepAlive(sctx, a.token)
		stream, err := a.api.WatchApproval(sctx, req)
		state := ""
		if err == nil {
			for stream.Receive() {
				a.fast.reset()
				a.rejected.reset()
				m := stream.Msg()
				if m.GetState() != state {
					state = m.GetState()
					a.log.Info("machine state", "machine", a.machineID, "state", state)
				}
				if configURL := m.GetConfigUrl(); configURL != "" {
					// The URL is a bearer secret: whoever fetches it
					// first gets the config. Only debug logs show it.
					a.log.Info("approved", "machine", a.machineID, "config_url", redactURL(configURL),
						"hostname", m.GetHostname(), "role", m.GetRole(), "schematic", m.GetSchematicId())
					a.log.Debug("config URL", "config_url", configURL)
					// The control plane ends the stream after the config
					// URL: reading that end leaves the connection free
					// for the config fetch (closing before it drops it).
					// One that kept the stream open is not waited for.
					stop := time.AfterFunc(streamEndWait, cancel)
					for stream.Receive() {
					}
					stop.Stop()
					stream.Close()
					cancel()
					return configURL, nil
				}
				if state == "decommissioned" || state == "provisioned" {
					break
				}
			}
			err = stream.Err()
			stream.Close()
		}
		cancel()
		if ctx.Err() != nil {
			return "", fmt.Errorf("stopped before the config was written: %w", ctx.Err())
		}
		switch {
		case state == "provisioned":
			return "", errNothingToFetch
		case state == "decommissioned":
			d := a.slow.next()
			a.log.Error("machine decommissioned: an operator must reinstate it", "machine", a.machineID, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return "", fmt.Errorf("stopped before the config was written: %w", ctx.Err())
			}
			return "", errDecommissioned
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			d := a.rejected.next()
			a.log.Warn("session rejected: attesting again", "machine", a.machineID, "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return "", fmt.Errorf("stopped before the config was written: %w", ctx.Err())
			}
			return "", errReenroll
		}
		if err == nil {
			err = errors.New("stream ended before approval")
		}
		d := a.fast.next()
		a.log.Warn("approval stream lost", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return "", fmt.Errorf("stopped before the config was written: %w", ctx.Err())
		}
	}
}

// keepAlive heartbeats with token until ctx is done, quietly: failures
// show on the approval stream, which acts on them.
func (a *agent) keepAlive(ctx context.Context, token string) {
	for sleep(ctx, jitter(a.cfg.HeartbeatInterval, 0.2, nil)) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		req := connect.NewRequest(&attestationv1.HeartbeatRequest{Ips: a.hw.Collect().IPs()})
		req.Header().Set("Authorization", "Bearer "+token)
		_, err := a.api.Heartbeat(cctx, req)
		cancel()
		if err != nil {
			a.log.Debug("session keepalive failed", "err", err)
		} else {
			a.log.Debug("session kept alive", "machine", a.machineID)
		}
	}
}

// fetchConfig GETs the one-time config. Only transport failures and server
// errors are retried: any answer to the GET may have spent the token.
func (a *agent) fetchConfig(ctx context.Context, configURL string) ([]byte, error) {
	u, err := resolve(a.cfg.Server, configURL)
	if err != nil {
		return nil, fmt.Errorf("%w: bad config URL %q: %v", errConfigGone, redactURL(configURL), err)
	}
	r := retrier{b: a.cfg.Retry}
	for {
		body, retry, err := a.getConfig(ctx, u)
		if err == nil {
			return body, nil
		}
		if !retry {
			return nil, err
		}
		d := r.next()
		a.log.Warn("config fetch failed", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return nil, fmt.Errorf("stopped before the config was written: %w", ctx.Err())
		}
	}
}

func (a *agent) getConfig(ctx context.Context, u string) (body []byte, retry bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s", errConfigGone, strings.ReplaceAll(err.Error(), u, redactURL(u)))
	}
	res, err := a.http.Do(req)
	if err != nil {
		// The transport's errors quote the URL, token and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactURL(ue.URL)
		}
		return nil, true, fmt.Errorf("fetch config: %w", err)
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode == http.StatusOK:
		body, err := io.ReadAll(io.LimitReader(res.Body, maxConfig+1))
		if err != nil {
			// The token is spent, but the body may be retrievable only
			// by a new approval; report clearly.
			return nil, false, fmt.Errorf("%w: reading the body failed: %v", errConfigGone, err)
		}
		if len(body) > maxConfig {
			return nil, false, fmt.Errorf("%w: config larger than %d bytes", errConfigGone, maxConfig)
		}
		return body, false, nil
	case res.StatusCode == http.StatusGone:
		return nil, false, fmt.Errorf("%w (410 Gone): an operator must approve the machine again", errConfigGone)
	case res.StatusCode == http.StatusNotFound:
		return nil, false, fmt.Errorf("%w (404 Not Found)", errConfigGone)
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		return nil, true, fmt.Errorf("fetch config: %s", res.Status)
	default:
		return nil, false, fmt.Errorf("%w: %s", errConfigGone, res.Status)
	}
}

// redactURL is a config URL fit for a log: its last path segment, the
// token, replaced.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a config URL that does not parse)"
	}
	if i := strings.LastIndexByte(u.Path, '/'); i >= 0 && i < len(u.Path)-1 {
		u.Path = u.Path[:i+1] + "REDACTED"
		u.RawPath = ""
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// resolve makes a config URL relative to the server absolute.
func resolve(server, ref string) (string, error) {
	base, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	u := base.ResolveReference(r)
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme %q", u.Scheme)
	}
	return u.String(), nil
}

// writeConfig writes the config, retrying on failure: it cannot be fetched
// a second time.
func (a *agent) writeConfig(ctx context.Context, body []byte) error {
	r := retrier{b: a.cfg.Retry}
	for {
		err := atomicfile.Write(a.cfg.ConfigOut, body, 0o600)
		if err == nil {
			a.log.Info("config written", "path", a.cfg.ConfigOut, "bytes", len(body))
			return nil
		}
		d := r.next()
		a.log.Error("config not written", "path", a.cfg.ConfigOut, "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return fmt.Errorf("stopped before the config was written: %w", err)
		}
	}
}

// heartbeat tells the control plane the agent is alive until ctx is done,
// every HeartbeatInterval ±20%, and sooner when the deadline it names
// requires. It returns nil when ctx is done, or the error of attesting
// again when the control plane refuses that for good.
func (a *agent) heartbeat(ctx context.Context) error {
	wait := time.Duration(0)
	for sleep(ctx, wait) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		req := connect.NewRequest(&attestationv1.HeartbeatRequest{Ips: a.hw.Collect().IPs()})
		a.authorize(req.Header())
		res, err := a.api.Heartbeat(cctx, req)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			a.fast.reset()
			a.rejected.reset()
			wait = jitter(a.cfg.HeartbeatInterval, 0.2, nil)
			if nd := res.Msg.GetNextDeadline(); nd != nil {
				deadline := nd.AsTime()
				a.log.Info("heartbeat", "machine", a.machineID, "next_deadline", deadline.Format(time.RFC3339))
				if half := time.Until(deadline) / 2; half > 0 && half < wait {
					wait = half
				}
			} else {
				a.log.Info("heartbeat", "machine", a.machineID)
			}
			wait = max(wait, 500*time.Millisecond)
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			d := a.rejected.next()
			a.log.Warn("session rejected: attesting again", "machine", a.machineID, "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			if err := a.enroll(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			a.certifyAgain(ctx)
			wait = 0
		default:
			wait = min(a.fast.next(), a.cfg.HeartbeatInterval)
			a.log.Warn("heartbeat failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
	}
	return nil
}
