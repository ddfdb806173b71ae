package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// waveResult is a storm in waves: every agent's Register, then, the daemon
// idle, every software TPM's answer to its challenge, then every Attest,
// then every config GET, each wave concurrency at a time. A wave keeps the
// daemon busy with one kind of request whatever the load generator's share
// of an enrollment costs it, which with RSA EKs (a private-key decryption
// per enrollment, some 0.5 ms) is more than the daemon's own: the
// interleaved closed loop cannot keep a one-core daemon busy then, and the
// daemon's CPU per enrollment there includes what an idle core costs it
// (smaller group commits, more wake-ups). The waves' CPU per enrollment is
// the daemon's with its core kept busy, which is what bounds its rate.
type waveResult struct {
	agents int
	// waves are the daemon's and load generator's use during the
	// register, attest and config waves.
	waves  [3]usage
	pinned string
}

var waveNames = [3]string{"register", "attest", "config"}

// cpu is the daemon's CPU over the waves.
func (r waveResult) cpu() time.Duration {
	var d time.Duration
	for _, w := range r.waves {
		d += w.daemon
	}
	return d
}

// rate is the enrollments per second of the waves' time.
func (r waveResult) rate() float64 {
	var d time.Duration
	for _, w := range r.waves {
		d += w.elapsed
	}
	return float64(r.agents) / d.Seconds()
}

// inWave runs fn for each of n agents, concurrency at a time.
func inWave(ctx context.Context, n, concurrency int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range n {
		g.Go(func() error {
			if err := fn(gctx, i); err != nil {
				return fmt.Errorf("agent %d: %w", i, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// wavePhase enrolls agents in waves against a daemon of its own.
func wavePhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, concurrency int) waveResult {
	tb.Helper()
	e := newStormEnv(tb, bin, pin, agents)
	ctx, d, c := e.ctx, e.d, e.c
	n := len(agents)
	r := waveResult{agents: n}
	var (
		challenges = make([]*attestationv1.RegisterResponse, n)
		answers    = make([]*attestationv1.AttestRequest, n)
		urls       = make([]string, n)
	)
	wave := func(i int, fn func(ctx context.Context, i int) error) {
		u0, err := takeUsage(ctx, d, pin)
		if err != nil {
			tb.Fatal(err)
		}
		if err := inWave(ctx, n, concurrency, fn); err != nil {
			tb.Fatalf("%s wave: %v", waveNames[i], err)
		}
		u1, err := takeUsage(ctx, d, pin)
		if err != nil {
			tb.Fatal(err)
		}
		r.waves[i] = u1.since(u0)
	}
	wave(0, func(ctx context.Context, i int) (err error) {
		challenges[i], err = c.register(ctx, agents[i])
		return err
	})
	// The software TPMs' work, the daemon idle: one goroutine, as the load
	// generator has one CPU.
	for i, s := range agents {
		var err error
		if answers[i], err = s.answer(challenges[i]); err != nil {
			tb.Fatalf("agent %d: %v", i, err)
		}
	}
	wave(1, func(ctx context.Context, i int) (err error) {
		if _, urls[i], err = c.answer(ctx, answers[i]); err == nil && urls[i] == "" {
			err = fmt.Errorf("attest answered without a config URL")
		}
		return err
	})
	wave(2, func(ctx context.Context, i int) error {
		_, err := c.fetch(ctx, urls[i])
		return err
	})
	r.pinned, _ = finish(tb, d, pin, agents, all(n))
	return r
}

// log reports a storm in waves.
func (r waveResult) log(tb testing.TB, pin *cpuPin) {
	tb.Helper()
	var s strings.Builder
	perEnrollment := ms(r.cpu()) / float64(r.agents)
	fmt.Fprintf(&s, "in waves, %d agents (every Register, then every Attest, then every config GET, the software TPMs' work between the first two): "+
		"daemon %.3f ms CPU per enrollment with its core kept busy, so %.0f enrollments/s on one core; %.1f/s over the waves' time\n",
		r.agents, perEnrollment, 1000/perEnrollment, r.rate())
	for i, w := range r.waves {
		busy := 100 * float64(w.daemon) / float64(w.elapsed)
		fmt.Fprintf(&s, "  %-8s %6.0f requests/s, daemon busy %5.1f %%, %.3f ms CPU per request, %.2f commits per request; %s\n",
			waveNames[i], float64(r.agents)/w.elapsed.Seconds(), busy, ms(w.daemon)/float64(r.agents),
			w.counted.commits/float64(r.agents), w.cpuLine(0, pin.daemonCPU, "daemon", w.daemon))
	}
	for _, w := range r.waves {
		if w.elapsed < 200*time.Millisecond {
			fmt.Fprintf(&s, "  NOTE: a wave under 200 ms is read in /proc's 10 ms ticks, so its CPU figures are coarse (a daemon busy over 100 %% is one of them)\n")
			break
		}
	}
	fmt.Fprintf(&s, "  %s", r.pinned)
	tb.Log(s.String())
}
