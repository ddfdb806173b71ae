package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// The storms' phases, shared by BenchmarkEnrollmentStorm and
// TestEnrollmentStorm: each runs against a daemon of its own (a fresh data
// directory, the agents pre-registered), pinned by a cpuPin, and ends
// checking the pinning and the database.

// usage is what the daemon and the load generator had used at a moment,
// or (from since) over a span.
type usage struct {
	at      time.Time
	elapsed time.Duration // over a span
	// daemon and load are the CPU time (user+system) of the daemon and of
	// this process.
	daemon, load time.Duration
	counted      counters
	wrote        int64
	// cpus are the daemon's CPU and the load generator's, as /proc/stat
	// counts them (all processes).
	cpus [2]cpuTicks
}

func takeUsage(ctx context.Context, d *daemonProc, pin *cpuPin) (usage, error) {
	u := usage{at: time.Now(), load: processCPU()}
	var err error
	if u.daemon, err = d.cpu(); err != nil {
		return u, err
	}
	if u.counted, err = d.scrape(ctx); err != nil {
		return u, err
	}
	if u.wrote, err = d.written(); err != nil {
		return u, err
	}
	for i, cpu := range []int{pin.daemonCPU, pin.loadCPU} {
		if u.cpus[i], err = readCPUTicks(cpu); err != nil {
			return u, err
		}
	}
	return u, nil
}

// since is the usage from v to u.
func (u usage) since(v usage) usage {
	return usage{
		at: u.at, elapsed: u.at.Sub(v.at),
		daemon: u.daemon - v.daemon, load: u.load - v.load,
		counted: u.counted.minus(v.counted),
		wrote:   u.wrote - v.wrote,
		cpus: [2]cpuTicks{
			{u.cpus[0].busy - v.cpus[0].busy, u.cpus[0].idle - v.cpus[0].idle, u.cpus[0].steal - v.cpus[0].steal},
			{u.cpus[1].busy - v.cpus[1].busy, u.cpus[1].idle - v.cpus[1].idle, u.cpus[1].steal - v.cpus[1].steal},
		},
	}
}

// cpuShare is how one CPU spent a span, in percent: on its own side's
// process, on other processes (the machine is shared), idle, and stolen by
// the hypervisor.
type cpuShare struct{ own, others, idle, stolen float64 }

// share is the use of the daemon's CPU (i 0) or the load generator's (1),
// own being its side's CPU time.
func (u usage) share(i int, own time.Duration) cpuShare {
	t := u.cpus[i]
	total := float64(t.busy + t.idle + t.steal)
	if total <= 0 {
		return cpuShare{}
	}
	pct := func(d time.Duration) float64 { return 100 * float64(d) / total }
	return cpuShare{pct(min(own, t.busy)), pct(max(t.busy-own, 0)), pct(t.idle), pct(t.steal)}
}

// cpuLine says how one CPU spent a span.
func (u usage) cpuLine(i int, cpu int, side string, own time.Duration) string {
	c := u.share(i, own)
	return fmt.Sprintf("CPU %d: %s %.1f %%, other processes %.1f %%, idle %.1f %%, stolen by the hypervisor %.1f %%",
		cpu, side, c.own, c.others, c.idle, c.stolen)
}

// crowded says what took CPU time from the storm besides its two sides,
// "" when little did (under 10 % of either CPU).
func (u usage) crowded(pin *cpuPin) string {
	d, l := u.share(0, u.daemon), u.share(1, u.load)
	if d.others+d.stolen < 10 && l.others+l.stolen < 10 {
		return ""
	}
	return fmt.Sprintf("other processes (the machine is shared) or the hypervisor took %.0f %% of CPU %d and %.0f %% of CPU %d",
		d.others+d.stolen, pin.daemonCPU, l.others+l.stolen, pin.loadCPU)
}

// stormEnv is what a phase runs against: a daemon of its own, pinned,
// its agents pre-registered; a client of it; and the phase's time limit.
type stormEnv struct {
	d       *daemonProc
	c       *stormClient
	ctx     context.Context
	durable string // the daemon's answer on durability
}

// newStormEnv starts a daemon pinned by pin, pre-registers agents and
// checks that its commits are durable.
func newStormEnv(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM) *stormEnv {
	tb.Helper()
	e := &stormEnv{d: startDaemon(tb, bin, pin)}
	preRegister(tb, e.d, agents)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	e.ctx = ctx
	var err error
	if e.durable, err = e.d.durable(ctx); err != nil {
		tb.Fatal(err)
	}
	e.c = newStormClient(e.d.url)
	tb.Cleanup(e.c.close)
	return e
}

// finish checks, while the daemon runs, that it and this process were
// pinned all along, then that the database holds agents' enrollments as
// dbAudit.check says, and stops the daemon. It returns the pinning's
// check and how many of acked are present.
func finish(tb testing.TB, d *daemonProc, pin *cpuPin, agents []*softTPM, acked []bool) (pinned string, present int) {
	tb.Helper()
	pinned, err := pin.verify(d.pid())
	if err != nil {
		tb.Fatalf("pinning did not hold: %v", err)
	}
	a, err := d.audit(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if present, err = a.check(agents, acked); err != nil {
		tb.Fatalf("the database does not hold the enrollments:\n%v", err)
	}
	d.stop()
	return pinned, present
}

func all(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// closedResult is a closed-loop storm's figures.
type closedResult struct {
	agents, concurrency int
	use                 usage
	lat                 []enrollLatency
	durable, pinned     string
}

// rate is the enrollments per second.
func (r closedResult) rate() float64 { return float64(r.agents) / r.use.elapsed.Seconds() }

// per is a figure per enrollment.
func (r closedResult) per(v float64) float64 { return v / float64(r.agents) }

// closedPhase enrolls agents, concurrency at a time, each worker taking
// the next agent when its enrollment ends: the daemon saturated, if the
// load generator can saturate it. Under a benchmark, the timer runs
// during the storm only.
func closedPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, concurrency int) closedResult {
	tb.Helper()
	e := newStormEnv(tb, bin, pin, agents)
	ctx, d, c := e.ctx, e.d, e.c
	r := closedResult{agents: len(agents), concurrency: concurrency, durable: e.durable}
	// Each usage scrapes /metrics, whose handler allocates in the daemon
	// too (a thousand objects or so): two scrapes in a row measure one,
	// which comes off the storm's.
	pre, err := takeUsage(ctx, d, pin)
	if err != nil {
		tb.Fatal(err)
	}
	u0, err := takeUsage(ctx, d, pin)
	if err != nil {
		tb.Fatal(err)
	}
	scrape := u0.counted.minus(pre.counted)
	if b, ok := tb.(*testing.B); ok {
		b.StartTimer()
	}
	r.lat, err = closedLoop(ctx, c, agents, concurrency)
	if b, ok := tb.(*testing.B); ok {
		b.StopTimer()
	}
	u1, uerr := takeUsage(ctx, d, pin)
	if err != nil {
		tb.Fatal(err)
	}
	if uerr != nil {
		tb.Fatal(uerr)
	}
	r.use = u1.since(u0)
	r.use.counted.mallocs -= scrape.mallocs
	r.use.counted.bytes -= scrape.bytes
	r.pinned, _ = finish(tb, d, pin, agents, all(len(agents)))
	return r
}

// log reports a closed-loop storm.
func (r closedResult) log(tb testing.TB, pin *cpuPin) {
	tb.Helper()
	u := r.use
	var s strings.Builder
	fmt.Fprintf(&s, "closed loop, %d agents %d at a time: %.1f enrollments/s (%v) with the daemon on one core\n",
		r.agents, r.concurrency, r.rate(), u.elapsed.Round(time.Millisecond))
	fmt.Fprintf(&s, "  %s\n", u.cpuLine(0, pin.daemonCPU, "daemon", u.daemon))
	fmt.Fprintf(&s, "  %s\n", u.cpuLine(1, pin.loadCPU, "load generator", u.load))
	fmt.Fprintf(&s, "  daemon per enrollment: %.3f ms CPU (user+sys), %.0f mallocs, %.1f KiB allocated, %.1f KiB written, %.2f commits (%.1f updates each); load generator %.3f ms CPU\n",
		r.per(ms(u.daemon)), r.per(u.counted.mallocs), r.per(u.counted.bytes)/1024, r.per(float64(u.wrote))/1024,
		r.per(u.counted.commits), u.counted.updates/max(u.counted.commits, 1), r.per(ms(u.load)))
	if busy := float64(u.daemon) / float64(u.elapsed); busy < 0.9 {
		why := u.crowded(pin)
		if l := u.share(1, u.load); l.own >= 80 {
			why = strings.TrimPrefix(why+"; the load generator's core was busy with it", "; ")
		}
		if why == "" {
			why = "the daemon waited (for its disk, or for the load generator's answers)"
		}
		fmt.Fprintf(&s, "  NOTE: the daemon was busy %.0f %% of the time, so %.1f/s is a lower bound of its one-core capacity"+
			" (its CPU per enrollment would allow %.0f/s): %s\n", 100*busy, r.rate(), 1000/r.per(ms(u.daemon)), why)
	} else if why := u.crowded(pin); why != "" {
		fmt.Fprintf(&s, "  NOTE: %s: the figures are the daemon's with less than its core\n", why)
	}
	fmt.Fprintf(&s, "  latency in the closed loop (the queue of %d, not the server's: %d / rate = %.0f ms on average, Little's law), p50/p99/p999 ms:\n",
		r.concurrency, r.concurrency, float64(r.concurrency)/r.rate()*1000)
	fmt.Fprintf(&s, "    %s\n", latencyLine(r.lat))
	fmt.Fprintf(&s, "  durable: %s; %d acknowledged, and as many machines configured and node.configured events, one per machine\n", r.durable, r.agents)
	fmt.Fprintf(&s, "  %s", r.pinned)
	tb.Log(s.String())
}

// quantiles are the p50, p99 and p999 of d (nearest rank).
func quantiles(d []time.Duration) [3]time.Duration {
	s := slices.Sorted(slices.Values(d))
	if len(s) == 0 {
		return [3]time.Duration{}
	}
	return [3]time.Duration{percentile(s, 0.50), percentile(s, 0.99), percentile(s, 0.999)}
}

// latencyLine is p50/p99/p999 of each request kind and of the whole.
func latencyLine(lat []enrollLatency) string {
	var parts []string
	for _, k := range requestKinds {
		q := quantiles(durations(lat, k.of))
		parts = append(parts, fmt.Sprintf("%s %.1f/%.1f/%.1f", k.name, ms(q[0]), ms(q[1]), ms(q[2])))
	}
	return strings.Join(parts, "  ")
}

// openResult is an open-loop storm's figures at one rate.
type openResult struct {
	load float64 // the fraction of the capacity offered
	// fixed: the rate is openLoopTarget, not a fraction of the capacity.
	fixed bool
	run   openLoopRun
	use   usage
	// behind says the load generator fell behind its schedule (launch
	// lag p99 over maxLaunchLag): the latencies are not the daemon's.
	behind bool
}

// maxLaunchLag bounds the load generator's lateness at p99: an arrival
// started later than that has eaten much of an enrollment's latency
// budget (50 ms) in the generator, whose core is then the bottleneck.
const maxLaunchLag = 20 * time.Millisecond

// openPhase offers enrollments of agents at rate per second, open loop
// (openLoop), arrivals drawn from seed. With strict, a load generator
// that fell behind (launch lag p99 over maxLaunchLag) fails tb, after the
// remaining phases have run and reported; without, it is only reported.
func openPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, load, rate float64, seed uint64, strict bool) openResult {
	tb.Helper()
	e := newStormEnv(tb, bin, pin, agents)
	ctx, d, c := e.ctx, e.d, e.c
	u0, err := takeUsage(ctx, d, pin)
	if err != nil {
		tb.Fatal(err)
	}
	r := openResult{load: load}
	r.run, err = openLoop(ctx, c, agents, rate, seed)
	if err != nil {
		tb.Fatalf("open loop at %.1f/s: %v", rate, err)
	}
	u1, err := takeUsage(ctx, d, pin)
	if err != nil {
		tb.Fatal(err)
	}
	r.use = u1.since(u0)
	finish(tb, d, pin, agents, all(len(agents)))
	if lag := quantiles(r.run.lag); lag[1] > maxLaunchLag {
		r.behind = true
		why := "its core was the bottleneck"
		if c := r.use.crowded(pin); c != "" {
			why = c + ": run it again on a quiet machine"
		}
		report := tb.Logf
		if strict {
			report = tb.Errorf
		}
		report("the load generator fell behind its schedule at %.1f/s (launch lag p99 %.1f ms, max %.1f ms, over %v), so that rate's latencies"+
			" are its own, not the daemon's: %s (%s)",
			rate, ms(lag[1]), ms(slices.Max(r.run.lag)), maxLaunchLag, why, r.use.cpuLine(1, pin.loadCPU, "load generator", r.use.load))
	}
	return r
}

// logOpen reports the open-loop storms as a table.
func logOpen(tb testing.TB, pin *cpuPin, capacity float64, rs []openResult) {
	tb.Helper()
	var s strings.Builder
	fmt.Fprintf(&s, "open loop: Poisson arrivals at fractions of the closed loop's %.1f enrollments/s (the one-core capacity), then at %.0f/s"+
		" (80 %% of the 2,000/s target), each enrollment started in a goroutine of its own at its scheduled time; latency counted from that time"+
		" (lag: how late the load generator started it)\n", capacity, openLoopTarget)
	w := tabwriter.NewWriter(&s, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "load\toffered/s\tenrollments\tlag p50/p99/max ms\tCPU %d: daemon %%\tothers %%\tCPU %d: generator %%\tothers %%\tdaemon ms/enrollment\tcommits/enrollment\tp50/p99/p999 ms:\tregister\tattest\tconfig\twhole\t\n",
		pin.daemonCPU, pin.loadCPU)
	for _, r := range rs {
		lag := quantiles(r.run.lag)
		d, l := r.use.share(0, r.use.daemon), r.use.share(1, r.use.load)
		n := float64(len(r.run.lat))
		load := fmt.Sprintf("%.0f %%", 100*r.load)
		if r.fixed {
			load = fmt.Sprintf("%.0f/s (%s)", openLoopTarget, load)
		}
		fmt.Fprintf(w, "%s\t%.1f\t%d\t%.2f/%.2f/%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t%.2f\t\t",
			load, r.run.offered, len(r.run.lat), ms(lag[0]), ms(lag[1]), ms(slices.Max(r.run.lag)),
			d.own, d.others+d.stolen, l.own, l.others+l.stolen, ms(r.use.daemon)/n, r.use.counted.commits/n)
		for _, k := range requestKinds {
			q := quantiles(durations(r.run.lat, k.of))
			fmt.Fprintf(w, "%.1f/%.1f/%.1f\t", ms(q[0]), ms(q[1]), ms(q[2]))
		}
		if r.behind {
			fmt.Fprint(w, " the generator fell behind: not the daemon's latencies")
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	tb.Log(strings.TrimRight(s.String(), "\n"))
}

// killResult is what a storm with a kill -9 of the daemon in its middle
// found.
type killResult struct {
	agents, concurrency int
	// ackedBefore enrollments were acknowledged (the config in hand)
	// before the kill; presentAfter of them were found after it.
	ackedBefore, presentAfter int
	// retried saw a request fail (the kill, mostly) and retried.
	retried int
	// ackedAfter were acknowledged after it; answerLost are configured
	// machines whose agent never got the config: the daemon committed
	// the fetch and died before its answer went out.
	ackedAfter, answerLost int
	// restart runs from the SIGKILL to the new daemon's first 200 on
	// /readyz; finish from then to the last agent done.
	restart, finish time.Duration
	pinned          string
}

// killPhase enrolls agents, concurrency at a time, each retrying as
// attestation-agent does (enrollRetrying); when half of them are
// acknowledged, it kills the daemon with SIGKILL, starts it again on the
// same data directory and port, and lets the agents finish. Then every
// acknowledged enrollment must be in the database, with one machine and
// one node.configured event per agent and nothing else.
func killPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, concurrency int) killResult {
	tb.Helper()
	e := newStormEnv(tb, bin, pin, agents)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	d, c := e.d, e.c
	r := killResult{agents: len(agents), concurrency: concurrency}
	var (
		mu          sync.Mutex
		killed      bool
		ackedBefore = make([]bool, len(agents))
		half        = make(chan struct{})
		failed      = make(chan error, len(agents))
	)
	type outcome struct {
		acked    bool
		failures int
		err      error
	}
	done := make(chan outcome, len(agents))
	work := make(chan int)
	for range concurrency {
		go func() {
			for i := range work {
				acked, failures, err := c.enrollRetrying(ctx, agents[i])
				if err != nil {
					err = fmt.Errorf("agent %d: %w", i, err)
					failed <- err
				}
				mu.Lock()
				if acked && !killed {
					ackedBefore[i] = true
					if r.ackedBefore++; r.ackedBefore == len(agents)/2 {
						close(half)
					}
				}
				mu.Unlock()
				done <- outcome{acked, failures, err}
			}
		}()
	}
	go func() {
		defer close(work)
		for i := range agents {
			select {
			case work <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case <-half:
	case err := <-failed:
		tb.Fatalf("before the kill: %v", err)
	case <-ctx.Done():
		tb.Fatalf("half the agents not enrolled within the time limit")
	}
	// Acknowledgements that arrive from now on count as after the kill,
	// though an answer read from the socket after it was committed
	// before it all the same.
	mu.Lock()
	killed = true
	mu.Unlock()
	t0 := time.Now()
	if err := d.kill(); err != nil {
		tb.Fatal(err)
	}
	if err := d.start(); err != nil {
		tb.Fatalf("restart after kill -9: %v", err)
	}
	r.restart = time.Since(t0)
	t1 := time.Now()
	var errs []error
	for range agents {
		o := <-done
		if o.failures > 0 {
			r.retried++
		}
		switch {
		case o.err != nil:
			errs = append(errs, o.err)
			cancel()
		case o.acked:
		default:
			r.answerLost++
		}
	}
	if len(errs) > 0 {
		tb.Fatalf("agents failed after kill -9: %v", errs[0])
	}
	r.finish = time.Since(t1)
	r.ackedAfter = len(agents) - r.ackedBefore - r.answerLost
	r.pinned, r.presentAfter = finish(tb, d, pin, agents, ackedBefore)
	return r
}

// log reports a kill -9 storm.
func (r killResult) log(tb testing.TB) {
	tb.Helper()
	tb.Logf("kill -9 mid-storm, %d agents %d at a time, retrying as attestation-agent does: killed with %d acknowledged, restarted on the same data directory and port in %v (SIGKILL to ready), all agents done %v later\n"+
		"  acknowledged before the kill %d, present after it %d; acknowledged after it %d; configured with the answer lost in the kill %d; %d agents saw a request fail and retried\n"+
		"  %d machines, each configured with exactly one node.configured event: no machine or event lost, none duplicated\n  %s",
		r.agents, r.concurrency, r.ackedBefore, r.restart.Round(time.Millisecond), r.finish.Round(time.Millisecond),
		r.ackedBefore, r.presentAfter, r.ackedAfter, r.answerLost, r.retried, r.agents, r.pinned)
}
