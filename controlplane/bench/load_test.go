package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	"github.com/attestation/attestation/agent"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// stormClient is the load generator's side of the agent API. Its HTTP
// connections are kept alive and reused from one enrollment to the next.
type stormClient struct {
	http  *http.Client
	agent attestationv1connect.AgentServiceClient
}

func newStormClient(url string) *stormClient {
	return agentClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}, url)
}

// agentClient is a stormClient of the daemon at url over hc.
func agentClient(hc *http.Client, url string) *stormClient {
	return &stormClient{http: hc, agent: attestationv1connect.NewAgentServiceClient(hc, url)}
}

// close drops the idle connections.
func (c *stormClient) close() { c.http.CloseIdleConnections() }

// enrollLatency is how long one enrollment took, whole and by request.
type enrollLatency struct {
	// whole is from the enrollment's start (in the open loop, its
	// scheduled arrival) to the config in hand.
	whole time.Duration
	// register and attest are one RPC each (the quote goes with the
	// activated credential in Attest: there is no request of its own);
	// watch is WatchApproval from the call until the config URL
	// arrives (zero when Attest answered with the URL, as it does for
	// a pre-registered machine); config is the config GET. The software TPM's work
	// between requests is in none of them.
	register, attest, watch, config time.Duration
}

// requestKinds names the requests of an enrollment, and the whole, in the
// order of the reports. WatchApproval is not among them: the storm's
// machines are pre-registered, so Attest answers with the config URL.
var requestKinds = []struct {
	name string
	of   func(enrollLatency) time.Duration
}{
	{"register", func(l enrollLatency) time.Duration { return l.register }},
	{"attest", func(l enrollLatency) time.Duration { return l.attest }},
	{"config", func(l enrollLatency) time.Duration { return l.config }},
	{"whole", func(l enrollLatency) time.Duration { return l.whole }},
}

// durations is each enrollment's latency of one kind.
func durations(lat []enrollLatency, of func(enrollLatency) time.Duration) []time.Duration {
	d := make([]time.Duration, len(lat))
	for i, l := range lat {
		d[i] = of(l)
	}
	return d
}

// attest is Register, the software TPM's ActivateCredential and Quote,
// and Attest; it returns the session token and the config URL Attest
// answered with ("" unless the machine was approved as it attested).
func (c *stormClient) attest(ctx context.Context, s *softTPM, lat *enrollLatency) (token, configURL string, err error) {
	t := time.Now()
	ch, err := c.register(ctx, s)
	if err != nil {
		return "", "", err
	}
	lat.register = time.Since(t)
	req, err := s.answer(ch)
	if err != nil {
		return "", "", err
	}
	t = time.Now()
	token, configURL, err = c.answer(ctx, req)
	lat.attest = time.Since(t)
	return token, configURL, err
}

// register is the Register request of s; it returns the challenge.
func (c *stormClient) register(ctx context.Context, s *softTPM) (*attestationv1.RegisterResponse, error) {
	reg, err := c.agent.Register(ctx, connect.NewRequest(&attestationv1.RegisterRequest{
		EkPublic:     s.ekPublic,
		AkPublic:     s.akPublic,
		TpmAvailable: true,
		Hardware:     &attestationv1.Hardware{Macs: []string{"52:54:00:00:00:01"}},
	}))
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	return reg.Msg, nil
}

// answer is the software TPM's work on a challenge, ActivateCredential
// and Quote: the Attest request that answers it.
func (s *softTPM) answer(ch *attestationv1.RegisterResponse) (*attestationv1.AttestRequest, error) {
	secret, err := s.activateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		return nil, err
	}
	quote, sig, values, err := s.quote(ch.Nonce, ch.Pcrs)
	if err != nil {
		return nil, err
	}
	return &attestationv1.AttestRequest{
		ChallengeId: ch.ChallengeId, Secret: secret, Quote: quote, QuoteSignature: sig, PcrValues: values,
	}, nil
}

// answer sends Attest; it returns the session token and the config URL.
func (c *stormClient) answer(ctx context.Context, req *attestationv1.AttestRequest) (token, configURL string, err error) {
	att, err := c.agent.Attest(ctx, connect.NewRequest(req))
	if err != nil {
		return "", "", fmt.Errorf("attest: %w", err)
	}
	return att.Msg.SessionToken, att.Msg.ConfigUrl, nil
}

// watch is WatchApproval until the stream ends; it returns the config URL
// ("" if none came) and the machine's last state.
func (c *stormClient) watch(ctx context.Context, token string) (url, state string, err error) {
	req := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
	req.Header().Set("Authorization", "Bearer "+token)
	stream, err := c.agent.WatchApproval(ctx, req)
	if err != nil {
		return "", "", fmt.Errorf("watch: %w", err)
	}
	defer stream.Close()
	// Read to the stream's end (the daemon ends it after the URL), as
	// the agent does, so that the connection carries the config GET.
	for stream.Receive() {
		state = stream.Msg().State
		if url == "" {
			url = stream.Msg().ConfigUrl
		}
	}
	if err := stream.Err(); err != nil && url == "" {
		return "", state, fmt.Errorf("watch: %w", err)
	}
	return url, state, nil
}

// fetch GETs the config; an answer other than 200 is an error, with its
// status.
func (c *stormClient) fetch(ctx context.Context, url string) (status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("fetch config: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("fetch config: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("fetch config: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("fetch config: HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// enroller enrolls agents: a stormClient, or one that spreads them over
// several daemons.
type enroller interface {
	enroll(ctx context.Context, s *softTPM, lat *enrollLatency) error
}

// enroll is one agent's enrollment, as attestation-agent does it when
// nothing fails; any failure is an error. It records each request's
// latency in lat, but not the whole.
func (c *stormClient) enroll(ctx context.Context, s *softTPM, lat *enrollLatency) error {
	token, url, err := c.attest(ctx, s, lat)
	if err != nil {
		return err
	}
	if url == "" { // not approved as it attested: watch for the URL
		t := time.Now()
		var state string
		if url, state, err = c.watch(ctx, token); err != nil {
			return err
		}
		if url == "" {
			return fmt.Errorf("watch ended in state %q without a config URL", state)
		}
		lat.watch = time.Since(t)
	}
	t := time.Now()
	if _, err := c.fetch(ctx, url); err != nil {
		return err
	}
	lat.config = time.Since(t)
	return nil
}

// agentRetry is attestation-agent's default backoff after a transient
// failure (agent.Config.Retry): from 1 s, doubling to 30 s, half of it
// random.
var agentRetry = agent.Backoff{Min: time.Second, Max: 30 * time.Second}

// enrollRetrying is one agent's enrollment through failures, retrying as
// attestation-agent does (agent.Run): the config URL Attest answered
// with, if any, else WatchApproval's; Register and Attest again after a
// failure to reach the daemon or a spent challenge; WatchApproval again
// with the session after a broken stream, enrolling again if the session
// is refused; the same config URL again after a transport failure or a
// server error, and WatchApproval again for a fresh URL when the daemon
// says the old one is gone. It reports whether the config came back
// (acknowledged); false with no error means the machine is provisioned
// and its config was fetched already, the answer lost (a fetch the
// daemon committed just before it died). failures counts the requests
// that failed on the way.
func (c *stormClient) enrollRetrying(ctx context.Context, s *softTPM) (acked bool, failures int, err error) {
	var fast, rejected, gone int
	wait := func(n *int) error {
		d := agentRetry.Delay(*n, nil)
		*n++
		failures++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	for {
		var token, attested string
		for {
			var lat enrollLatency
			token, attested, err = c.attest(ctx, s, &lat)
			if err == nil {
				fast = 0
				break
			}
			if code := connect.CodeOf(err); code == connect.CodeInvalidArgument || code == connect.CodeUnimplemented {
				return false, failures, err
			}
			if err := wait(&fast); err != nil {
				return false, failures, err
			}
		}
	watch:
		for {
			// The URL Attest answered with first, as the agent does.
			url, state, err := attested, "", error(nil)
			if attested = ""; url == "" {
				url, state, err = c.watch(ctx, token)
			}
			switch {
			case url != "":
				for {
					status, err := c.fetch(ctx, url)
					if err == nil {
						return true, failures, nil
					}
					if status != 0 && status < 500 && status != http.StatusTooManyRequests {
						// Spent, replaced or unknown: a fresh URL comes with
						// watching again.
						if err := wait(&gone); err != nil {
							return false, failures, err
						}
						continue watch
					}
					if err := wait(&fast); err != nil {
						return false, failures, err
					}
				}
			case state == "provisioned":
				return false, failures, nil
			case state == "decommissioned":
				return false, failures, errors.New("machine decommissioned")
			case connect.CodeOf(err) == connect.CodeUnauthenticated:
				if err := wait(&rejected); err != nil {
					return false, failures, err
				}
				break watch
			}
			if err := wait(&fast); err != nil {
				return false, failures, err
			}
		}
	}
}

// closedLoop enrolls every agent, concurrency at a time (each worker takes
// the next agent when its enrollment ends), and returns each enrollment's
// latencies.
func closedLoop(ctx context.Context, c enroller, agents []*softTPM, concurrency int) ([]enrollLatency, error) {
	lat := make([]enrollLatency, len(agents))
	work := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	for range concurrency {
		g.Go(func() error {
			for i := range work {
				t0 := time.Now()
				if err := c.enroll(gctx, agents[i], &lat[i]); err != nil {
					return fmt.Errorf("agent %d: %w", i, err)
				}
				lat[i].whole = time.Since(t0)
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for i := range agents {
			select {
			case work <- i:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	return lat, g.Wait()
}

// openLoopRun is what an open-loop storm measured.
type openLoopRun struct {
	lat []enrollLatency
	// lag is, per arrival, how late the load generator started it.
	lag []time.Duration
	// offered is the arrivals' rate over the schedule (the Poisson draw's,
	// near the rate asked for); elapsed runs from the first scheduled
	// arrival to the last enrollment's end.
	offered float64
	elapsed time.Duration
}

// openLoop enrolls every agent, arrivals at rate per second, independent of
// completions: Poisson arrivals (exponential gaps of mean 1/rate, drawn
// from seed, so the schedule is the same every run), each starting its
// enrollment in a goroutine of its own at its scheduled time. An
// enrollment's whole latency counts from its scheduled time, so an arrival
// the generator starts late is charged its lateness, which is also kept
// apart (lag) to tell the generator's delay from the daemon's.
func openLoop(ctx context.Context, c enroller, agents []*softTPM, rate float64, seed uint64) (openLoopRun, error) {
	run := openLoopRun{lat: make([]enrollLatency, len(agents)), lag: make([]time.Duration, len(agents))}
	rnd := rand.New(rand.NewPCG(seed, seed))
	sched := make([]time.Duration, len(agents))
	var at time.Duration
	for i := range sched {
		sched[i] = at
		at += time.Duration(rnd.ExpFloat64() / rate * float64(time.Second))
	}
	if len(sched) > 1 {
		run.offered = float64(len(sched)-1) / sched[len(sched)-1].Seconds()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		due := start.Add(sched[i])
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			run.lag[i] = time.Since(due)
			if err := c.enroll(ctx, agents[i], &run.lat[i]); err != nil {
				cancel(fmt.Errorf("agent %d: %w", i, err))
				return
			}
			run.lat[i].whole = time.Since(due)
		})
	}
	wg.Wait()
	run.elapsed = time.Since(start)
	return run, context.Cause(ctx)
}
