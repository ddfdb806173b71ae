package agentapi

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/controlplane/logging"
)

// Limits bound the work the agent API does for callers that have proved
// nothing yet: Register calls, per source address (an IPv6 caller by its
// /64, which one host can fill), so that a flood from one place cannot
// crowd out the machines of another. The sources tracked are bounded too
// (maxSources). The challenges Registers leave outstanding hold nothing
// on the control plane (they are sealed tokens the agents carry); the
// rate bounds how many one source can have, and so the records their
// answers leave in the database until they expire.
type Limits struct {
	// RegisterRate is how many Register calls a second one source may
	// make, on average, after a burst of RegisterBurst.
	RegisterRate  float64
	RegisterBurst int
}

// DefaultLimits: a machine registers once a boot, and again after a
// refusal; a rack booting at once behind one NAT stays under them.
var DefaultLimits = Limits{RegisterRate: 5, RegisterBurst: 20}

// maxSources bounds the sources whose Register rate is tracked at once:
// past it, a new source waits until idle ones are forgotten.
const maxSources = 100_000

// admission enforces the Register rate per source.
type admission struct {
	limits  Limits
	refused *prometheus.CounterVec
	// logged spaces the refusal log lines out: a flood of Registers must
	// not become a flood of lines.
	logged logging.Every

	mu      sync.Mutex
	sources map[netip.Addr]*bucket
	// sweepAt is when idle sources are next forgotten.
	sweepAt time.Time
}

// bucket is a token bucket: tokens at last.
type bucket struct {
	tokens float64
	last   time.Time
}

func newAdmission(l Limits, reg prometheus.Registerer) *admission {
	a := &admission{limits: l, sources: map[netip.Addr]*bucket{}, logged: logging.Every{Interval: time.Second}, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestation_agent_register_refused_total",
		Help: "Register calls refused for load, by reason (rate: the source's Register rate, or too many sources tracked).",
	}, []string{"reason"})}
	a.refused.WithLabelValues("rate")
	if reg != nil {
		reg.MustRegister(a.refused)
	}
	return a
}

// source is the key a peer address is limited under: an IPv4 address, or
// the /64 of an IPv6 one. An address that does not parse (not TCP) is one
// source.
func source(ip string) netip.Addr {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allowRegister takes a token of src's bucket, or says when to retry.
func (a *admission) allowRegister(src netip.Addr, now time.Time) error {
	l := a.limits
	if l.RegisterRate <= 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.After(a.sweepAt) {
		a.sweep(now)
	}
	b := a.sources[src]
	if b == nil {
		if len(a.sources) >= maxSources {
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("registrations from %d sources are being tracked, the most this control plane follows: retry in a few seconds", maxSources))
		}
		b = &bucket{tokens: float64(l.RegisterBurst), last: now}
		a.sources[src] = b
	}
	b.tokens = math.Min(float64(l.RegisterBurst), b.tokens+now.Sub(b.last).Seconds()*l.RegisterRate)
	b.last = now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.RegisterRate * float64(time.Second))
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("too many registrations from %s: at most %g a second after a burst of %d; retry in %s",
			src, l.RegisterRate, l.RegisterBurst, wait.Round(time.Millisecond)))
	}
	b.tokens--
	return nil
}

// sweep forgets the sources whose buckets have refilled: they are as if
// never seen.
func (a *admission) sweep(now time.Time) {
	full := time.Duration(float64(a.limits.RegisterBurst) / a.limits.RegisterRate * float64(time.Second))
	for src, b := range a.sources {
		if now.Sub(b.last) >= full {
			delete(a.sources, src)
		}
	}
	a.sweepAt = now.Add(max(full, time.Second))
}
