package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/internal/pgtest"
	"github.com/attestation/attestation/internal/testenv"
)

// The enrollment storm on PostgreSQL: the same agents against one daemon
// on SQLite, one on PostgreSQL, and two on one PostgreSQL, each request of
// an agent sent to the next daemon in turn; then the two under a steady
// load, one of them killed with SIGKILL.
const (
	// pgStormAgents enroll in each closed loop, pgStormConcurrency at a
	// time; pgOpenAgents in each open loop.
	pgStormAgents      = 500
	pgStormConcurrency = 100
	pgOpenAgents       = 400
	// pgOpenLoad is the open loop's rate, a fraction of the slowest
	// configuration's closed-loop rate: the same rate for all three.
	pgOpenLoad = 0.5
	// The failover storm offers pgFailoverLoad of the two daemons'
	// closed-loop rate for pgFailoverSeconds, the kill at pgKillAt of its
	// arrivals.
	pgFailoverLoad    = 0.5
	pgFailoverSeconds = 16
	pgKillAt          = 0.4
)

// BenchmarkEnrollmentStormPostgres compares, in one run, the enrollment
// storm of BenchmarkEnrollmentStorm (agents with ECC P-256 EKs,
// pre-registered, so each enrollment is Register, Attest, WatchApproval
// and the config GET, ending configured) on three configurations:
//
//   - sqlite-1: one daemon on its SQLite file (the existing storm's
//     phases, closedPhase and openPhase);
//   - pg-1: one daemon with --database postgres://... on a real
//     PostgreSQL (internal/pgtest: fsync and synchronous_commit on, a
//     Unix socket);
//   - pg-2: two daemons on that PostgreSQL (sharing its CA, admin token
//     and config token key), each agent's requests sent to the daemons in
//     turn, so that every enrollment's Attest goes to the other daemon
//     than its Register, its WatchApproval to the same as its Register,
//     and its config GET to the other (rewritten from the config URL's
//     host): the challenges and tokens one daemon issues are taken by the
//     other.
//
// Pinning, on 2 CPUs: the daemons and every PostgreSQL process (the
// postmaster and its backends, which it forks into its own cpuset or
// affinity) share the first CPU; the load generator has the second. So
// pg-2 measures what a second instance costs on one core, not what it
// adds on a second machine.
//
// Each configuration runs a closed loop (500 agents, 100 at a time):
// enrollments/s; daemon CPU ms per enrollment (the daemons' user+sys from
// /proc, summed); PostgreSQL's CPU per enrollment (the postmaster's and its
// processes' utime+stime, ended backends' through the postmaster's
// cutime+cstime). Then an open loop (400 agents, Poisson arrivals) at
// half the slowest configuration's closed-loop rate, the same rate for
// all three: p50 and p99 of the whole enrollment. The figures are
// reported per configuration (sqlite-1-enrollments/s, pg-1-..., pg-2-...),
// with pg-1 and pg-2 relative to sqlite-1, and logged side by side.
//
// Failover: the two daemons on a fresh database under Poisson arrivals at
// half pg-2's closed-loop rate for 16 s, each agent retrying as
// attestation-agent does (enrollRetrying) and, on a connection error,
// sending the request to the next daemon (as a load balancer that stops
// routing to a dead backend); at 40 % of the arrivals one daemon gets
// SIGKILL and is not restarted. Reported: failover-recovered-ms, from the
// kill until the backlog of arrived but unfinished enrollments is back
// within its largest before the kill for good (enrollments complete at
// the offered rate again; 0 when the survivor kept up throughout);
// failover-first-ms, from the kill to the first enrollment that arrived
// after it completing; failover-affected-done-ms, from the kill to the
// last enrollment that had a request fail (in flight on the killed
// daemon: the agent's backoff, from 1 s, is most of it) completing.
// Every enrollment acknowledged before the kill must be in the database,
// and every agent's machine configured with exactly one node.configured
// event.
//
// The timer runs during the SQLite closed loop only (ns/op); the whole
// takes about a minute and a half on 2 CPUs.
func BenchmarkEnrollmentStormPostgres(b *testing.B) {
	b.StopTimer()
	needCPUs(b, fatalf)
	bin := buildDaemon(b)
	keys, err := eccEKKeys(max(pgStormAgents, pgOpenAgents))
	if err != nil {
		b.Fatal(err)
	}
	agents := softTPMs(b, privateKeys(keys))
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for range b.N {
		pgStorm(b, bin, agents)
	}
}

// pgConfig is one configuration's figures.
type pgConfig struct {
	name               string
	rate               float64 // closed loop, enrollments/s
	daemonCPU, pgCPU   float64 // ms per enrollment
	p50, p99           float64 // open loop, ms
	offered, openBusy  float64
	registers, attests []int // per daemon, pg-2
}

func pgStorm(b *testing.B, bin string, agents []*softTPM) {
	closedAgents, openAgents := agents[:pgStormAgents], agents[:pgOpenAgents]
	// The server starts before the pinning, in no cpuset of the storm's.
	pgtest.DSN(b)
	pin := pinStorm(b, fatalf)
	b.Log("pinning: " + pin.how + "; PostgreSQL's processes with the daemons")

	sqlite := closedPhase(b, bin, pin, closedAgents, pgStormConcurrency)
	u := sqlite.use
	b.Logf("sqlite-1 closed loop, %d agents %d at a time: %.1f enrollments/s, %.3f ms daemon CPU per enrollment (load generator %.3f ms)\n  %s\n  %s\n  durable: %s\n  %s",
		sqlite.agents, sqlite.concurrency, sqlite.rate(), sqlite.per(ms(u.daemon)), sqlite.per(ms(u.load)),
		u.cpuLine(0, pin.daemonCPU, "daemon", u.daemon), u.cpuLine(1, pin.loadCPU, "load generator", u.load), sqlite.durable, sqlite.pinned)
	pg1 := pgClosedPhase(b, bin, pin, closedAgents, pgStormConcurrency, 1)
	pg2 := pgClosedPhase(b, bin, pin, closedAgents, pgStormConcurrency, 2)
	rate := pgOpenLoad * min(sqlite.rate(), pg1.rate, pg2.rate)
	sqliteOpen := openPhase(b, bin, pin, openAgents, pgOpenLoad, rate, 1, false)
	pg1Open := pgOpenPhase(b, bin, pin, openAgents, rate, 1)
	pg2Open := pgOpenPhase(b, bin, pin, openAgents, rate, 2)

	configs := []pgConfig{
		{name: "sqlite-1", rate: sqlite.rate(), daemonCPU: sqlite.per(ms(sqlite.use.daemon)), offered: sqliteOpen.run.offered},
		pg1.config("pg-1", pg1Open), pg2.config("pg-2", pg2Open),
	}
	q := quantiles(durations(sqliteOpen.run.lat, wholeOf))
	configs[0].p50, configs[0].p99 = ms(q[0]), ms(q[1])
	logPGConfigs(b, configs)
	for _, c := range configs {
		b.ReportMetric(c.rate, c.name+"-enrollments/s")
		b.ReportMetric(c.daemonCPU, c.name+"-daemon-cpu-ms/enrollment")
		b.ReportMetric(c.p50, c.name+"-p50-ms")
		b.ReportMetric(c.p99, c.name+"-p99-ms")
		if c.name != "sqlite-1" {
			b.ReportMetric(c.pgCPU, c.name+"-postgres-cpu-ms/enrollment")
			b.ReportMetric(c.rate/configs[0].rate, c.name+"-rate-vs-sqlite")
		}
	}

	n := int(pgFailoverLoad * pg2.rate * pgFailoverSeconds)
	fkeys, err := eccEKKeys(n)
	if err != nil {
		b.Fatal(err)
	}
	f := failoverPhase(b, bin, pin, softTPMs(b, privateKeys(fkeys)), pgFailoverLoad*pg2.rate, pgKillAt)
	f.log(b)
	b.ReportMetric(ms(f.recovered), "failover-recovered-ms")
	b.ReportMetric(ms(f.first), "failover-first-ms")
	b.ReportMetric(ms(f.affected), "failover-affected-done-ms")
}

// logPGConfigs logs the configurations side by side.
func logPGConfigs(tb testing.TB, cs []pgConfig) {
	tb.Helper()
	var s strings.Builder
	fmt.Fprintf(&s, "enrollment storm, SQLite beside PostgreSQL (daemons and PostgreSQL on one CPU, the load generator on the other);"+
		" closed loop %d agents %d at a time, open loop %d agents at %.1f/s offered\n", pgStormAgents, pgStormConcurrency, pgOpenAgents, cs[0].offered)
	w := tabwriter.NewWriter(&s, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "config\tenrollments/s\tvs SQLite\tdaemon CPU ms/enrollment\tPostgreSQL CPU ms/enrollment\tdaemon+PostgreSQL ms\topen loop p50 ms\tp99 ms\t")
	for _, c := range cs {
		pg := "-"
		if c.name != "sqlite-1" {
			pg = fmt.Sprintf("%.3f", c.pgCPU)
		}
		fmt.Fprintf(w, "%s\t%.1f\t%.2f\t%.3f\t%s\t%.3f\t%.1f\t%.1f\t\n",
			c.name, c.rate, c.rate/cs[0].rate, c.daemonCPU, pg, c.daemonCPU+c.pgCPU, c.p50, c.p99)
	}
	w.Flush()
	for _, c := range cs {
		if len(c.registers) > 1 {
			fmt.Fprintf(&s, "%s: Register requests per daemon %v, Attest %v: every Attest went to the other daemon than its Register\n",
				c.name, c.registers, c.attests)
		}
	}
	tb.Log(strings.TrimRight(s.String(), "\n"))
}

// pgCluster is n daemons on one PostgreSQL database, pinned with
// PostgreSQL to the daemons' CPU.
type pgCluster struct {
	daemons []*daemonProc
	pg      *pgServer
	durable string
	rr      *rrClients
	ctx     context.Context
}

// startPGCluster makes a fresh database, starts n daemons on it (the
// first makes the CA and the config token key; the others take them),
// pins PostgreSQL with them, and pre-registers agents.
func startPGCluster(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, n int) *pgCluster {
	tb.Helper()
	dsn := pgtest.DSN(tb)
	pg, err := postgresOf(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pg.pin(pin); err != nil {
		tb.Fatalf("pin PostgreSQL: %v", err)
	}
	c := &pgCluster{pg: pg}
	if c.durable, err = pgDurable(tb, dsn); err != nil {
		tb.Fatal(err)
	}
	first := startDaemonOn(tb, bin, pin, tb.TempDir(), "--database", dsn)
	c.daemons = append(c.daemons, first)
	for range n - 1 {
		dir := tb.TempDir()
		// The files the daemons over one database share: the CA and
		// the config token key (challenges are sealed with a key derived
		// from it), the first's.
		c.daemons = append(c.daemons, startDaemonOn(tb, bin, pin, dir, "--database", dsn,
			"--ca-cert", filepath.Join(first.dataDir, "ca.crt"), "--ca-key", filepath.Join(first.dataDir, "ca.key"),
			"--config-token-key", filepath.Join(first.dataDir, daemon.ConfigTokenKeyFile)))
	}
	preRegister(tb, first, agents)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	c.ctx = ctx
	c.rr = newRRClients(c.daemons, agents)
	tb.Cleanup(c.rr.close)
	return c
}

// pgDurable says how PostgreSQL makes commits durable, failing unless
// every commit is fsynced before it is acknowledged.
func pgDurable(tb testing.TB, dsn string) (string, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var fsync, sync string
	if err := db.QueryRowContext(tb.Context(), "SELECT current_setting('fsync'), current_setting('synchronous_commit')").Scan(&fsync, &sync); err != nil {
		return "", fmt.Errorf("read PostgreSQL's durability settings: %w", err)
	}
	if fsync != "on" || sync != "on" {
		return "", fmt.Errorf("PostgreSQL runs with fsync=%s, synchronous_commit=%s: its commits are not durable when acknowledged", fsync, sync)
	}
	return "PostgreSQL fsync=on, synchronous_commit=on (the WAL flushed at every commit)", nil
}

// pgUsage is the CPU time used so far by the daemons, PostgreSQL and this
// process.
type pgUsage struct {
	at                 time.Time
	daemons, pg, load  time.Duration
	registers, attests []int
	// cpus are the daemons' CPU and the load generator's, as /proc/stat
	// counts them (all processes).
	cpus [2]cpuTicks
}

func (c *pgCluster) usage(pin *cpuPin) (pgUsage, error) {
	u := pgUsage{at: time.Now(), load: processCPU()}
	for i, cpu := range []int{pin.daemonCPU, pin.loadCPU} {
		var err error
		if u.cpus[i], err = readCPUTicks(cpu); err != nil {
			return u, err
		}
	}
	for _, d := range c.daemons {
		t, err := d.cpu()
		if err != nil {
			return u, err
		}
		u.daemons += t
	}
	var err error
	u.pg, err = c.pg.cpu()
	u.registers, u.attests = c.rr.served()
	return u, err
}

// finish checks the pinning of every daemon and of PostgreSQL, and the
// database against agents (acked: the enrollments acknowledged), through
// the first daemon alive; it stops the daemons and returns how many of
// acked are present.
func (c *pgCluster) finish(tb testing.TB, pin *cpuPin, agents []*softTPM, acked []bool) (pinned string, present int) {
	tb.Helper()
	var alive []*daemonProc
	for _, d := range c.daemons {
		if d.exited != nil {
			alive = append(alive, d)
		}
	}
	var parts []string
	for i, d := range alive {
		p, err := pin.verify(d.pid())
		if err != nil {
			tb.Fatalf("pinning did not hold: %v", err)
		}
		parts = append(parts, fmt.Sprintf("daemon %d: %s", i+1, p))
	}
	n, err := c.pg.verify(pin)
	if err != nil {
		tb.Fatalf("pinning did not hold: %v", err)
	}
	parts = append(parts, fmt.Sprintf("all %d PostgreSQL processes allowed CPU %d only", n, pin.daemonCPU))
	a, err := alive[0].audit(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if present, err = a.check(agents, acked); err != nil {
		tb.Fatalf("the database does not hold the enrollments:\n%v", err)
	}
	for _, d := range alive {
		d.stop()
	}
	return strings.Join(parts, "; "), present
}

// pgClosed is a closed loop's figures on PostgreSQL.
type pgClosed struct {
	daemons            int
	rate               float64
	daemonCPU, pgCPU   float64
	registers, attests []int
}

func (r pgClosed) config(name string, open pgOpen) pgConfig {
	q := quantiles(durations(open.run.lat, wholeOf))
	return pgConfig{name: name, rate: r.rate, daemonCPU: r.daemonCPU, pgCPU: r.pgCPU, p50: ms(q[0]), p99: ms(q[1]),
		offered: open.run.offered, registers: r.registers, attests: r.attests}
}

// pgClosedPhase is closedPhase on n daemons over PostgreSQL.
func pgClosedPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, concurrency, n int) pgClosed {
	tb.Helper()
	c := startPGCluster(tb, bin, pin, agents, n)
	u0, err := c.usage(pin)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = closedLoop(c.ctx, c.rr, agents, concurrency)
	u1, uerr := c.usage(pin)
	if err != nil {
		tb.Fatalf("closed loop on %d daemons over PostgreSQL: %v", n, err)
	}
	if uerr != nil {
		tb.Fatal(uerr)
	}
	r := pgClosed{daemons: n, rate: float64(len(agents)) / u1.at.Sub(u0.at).Seconds()}
	per := func(d time.Duration) float64 { return ms(d) / float64(len(agents)) }
	r.daemonCPU, r.pgCPU = per(u1.daemons-u0.daemons), per(u1.pg-u0.pg)
	for i := range n {
		r.registers = append(r.registers, u1.registers[i]-u0.registers[i])
		r.attests = append(r.attests, u1.attests[i]-u0.attests[i])
	}
	// The storm's usage as usage counts it, the daemons' side being the
	// daemons and PostgreSQL: what else ran on the two CPUs.
	var side usage
	side.daemon, side.load = u1.daemons-u0.daemons+u1.pg-u0.pg, u1.load-u0.load
	for i := range u1.cpus {
		a, b := u1.cpus[i], u0.cpus[i]
		side.cpus[i] = cpuTicks{a.busy - b.busy, a.idle - b.idle, a.steal - b.steal}
	}
	pinned, _ := c.finish(tb, pin, agents, all(len(agents)))
	tb.Logf("pg-%d closed loop, %d agents %d at a time: %.1f enrollments/s, %.3f ms daemon CPU and %.3f ms PostgreSQL CPU per enrollment"+
		" (load generator %.3f ms); Register requests per daemon %v, Attest %v\n  %s\n  %s\n  durable: %s\n  %s",
		n, len(agents), concurrency, r.rate, r.daemonCPU, r.pgCPU, per(u1.load-u0.load), r.registers, r.attests,
		side.cpuLine(0, pin.daemonCPU, "daemons and PostgreSQL", side.daemon), side.cpuLine(1, pin.loadCPU, "load generator", side.load),
		c.durable, pinned)
	return r
}

// pgOpen is an open loop's figures on PostgreSQL.
type pgOpen struct{ run openLoopRun }

// pgOpenPhase is openPhase on n daemons over PostgreSQL.
func pgOpenPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, rate float64, n int) pgOpen {
	tb.Helper()
	c := startPGCluster(tb, bin, pin, agents, n)
	run, err := openLoop(c.ctx, c.rr, agents, rate, 1)
	if err != nil {
		tb.Fatalf("open loop on %d daemons over PostgreSQL at %.1f/s: %v", n, rate, err)
	}
	c.finish(tb, pin, agents, all(len(agents)))
	lag := quantiles(run.lag)
	tb.Logf("pg-%d open loop, %d agents at %.1f/s offered: p50/p99/p999 ms %s; load generator lag p50/p99 %.2f/%.2f ms",
		n, len(agents), run.offered, latencyLine(run.lat), ms(lag[0]), ms(lag[1]))
	return pgOpen{run: run}
}

// failoverResult is what the kill of one of two daemons under load found.
type failoverResult struct {
	agents  int
	offered float64
	killAt  float64 // the fraction of the arrivals
	// recovered runs from the kill until the backlog (arrived, not yet
	// enrolled) is back within its largest before the kill for good;
	// first from the kill to the first enrollment that arrived after it
	// done.
	recovered, first time.Duration
	// affected runs from the kill to the last enrollment that saw a
	// request fail done: the agents caught by the kill back.
	affected time.Duration
	// baseline and peak are the backlog's largest before and after the
	// kill.
	baseline, peak int
	// ackedBefore were acknowledged before the kill, presentAfter of them
	// found after; retried saw a request fail; failedOver had a request
	// sent to the survivor after a connection error.
	ackedBefore, presentAfter, retried, answerLost int
	failedOver                                     int64
	// slowest is the longest enrollment that saw a failure.
	slowest time.Duration
	pinned  string
}

// failoverPhase runs two daemons on a fresh database under Poisson
// arrivals of agents at rate per second, each agent retrying as
// attestation-agent does, its requests sent to the daemons in turn and to
// the next on a connection error; at the arrival killAt (a fraction of
// them) the first daemon gets SIGKILL. Then every acknowledged
// enrollment must be in the database.
func failoverPhase(tb testing.TB, bin string, pin *cpuPin, agents []*softTPM, rate, killAt float64) failoverResult {
	tb.Helper()
	c := startPGCluster(tb, bin, pin, agents, 2)
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	r := failoverResult{agents: len(agents), killAt: killAt}
	rnd := rand.New(rand.NewPCG(7, 7))
	sched := make([]time.Duration, len(agents))
	var at time.Duration
	for i := range sched {
		sched[i] = at
		at += time.Duration(rnd.ExpFloat64() / rate * float64(time.Second))
	}
	r.offered = float64(len(sched)-1) / sched[len(sched)-1].Seconds()
	kill := int(killAt * float64(len(agents)))
	type outcome struct {
		start, done time.Time
		acked       bool
		failures    int
		err         error
	}
	out := make([]outcome, len(agents))
	var (
		wg      sync.WaitGroup
		tKill   time.Time
		killErr = make(chan error, 1)
	)
	start := time.Now()
	for i := range agents {
		if d := time.Until(start.Add(sched[i])); d > 0 {
			time.Sleep(d)
		}
		if i == kill {
			tKill = time.Now()
			killErr <- c.daemons[0].kill()
		}
		wg.Go(func() {
			o := &out[i]
			o.start = start.Add(sched[i])
			o.acked, o.failures, o.err = c.rr.of(agents[i]).enrollRetrying(ctx, agents[i])
			o.done = time.Now()
			if o.err != nil {
				cancel()
			}
		})
	}
	if err := <-killErr; err != nil {
		tb.Fatalf("kill -9: %v", err)
	}
	wg.Wait()
	acked := make([]bool, len(agents))
	for i, o := range out {
		if o.err != nil {
			tb.Fatalf("agent %d: %v", i, o.err)
		}
		if o.failures > 0 {
			r.retried++
			r.slowest = max(r.slowest, o.done.Sub(o.start))
			r.affected = max(r.affected, o.done.Sub(tKill))
		}
		if !o.acked {
			r.answerLost++
		}
		if o.acked && o.done.Before(tKill) {
			acked[i] = true
			r.ackedBefore++
		}
		if o.start.After(tKill) && (r.first == 0 || o.done.Sub(tKill) < r.first) {
			r.first = o.done.Sub(tKill)
		}
	}
	r.failedOver = c.rr.failedOver.Load()
	// The backlog as arrivals and completions change it, in time order;
	// the first second is the warm-up.
	type step struct {
		at time.Time
		d  int
	}
	var steps []step
	for _, o := range out {
		steps = append(steps, step{o.start, +1}, step{o.done, -1})
	}
	slices.SortFunc(steps, func(a, b step) int { return a.at.Compare(b.at) })
	backlog := 0
	for _, s := range steps {
		backlog += s.d
		switch {
		case s.at.Before(start.Add(time.Second)):
		case s.at.Before(tKill):
			r.baseline = max(r.baseline, backlog)
		}
	}
	backlog = 0
	for _, s := range steps {
		backlog += s.d
		if !s.at.Before(tKill) {
			r.peak = max(r.peak, backlog)
			if backlog > r.baseline {
				r.recovered = s.at.Sub(tKill)
			}
		}
	}
	r.pinned, r.presentAfter = c.finish(tb, pin, agents, acked)
	return r
}

func (r failoverResult) log(tb testing.TB) {
	tb.Helper()
	recovered := fmt.Sprintf("recovered %v after the kill: the backlog of arrived, unfinished enrollments (at most %d before the kill, %d after it) back within its pre-kill largest for good",
		r.recovered.Round(time.Millisecond), r.baseline, r.peak)
	if r.recovered == 0 {
		recovered = fmt.Sprintf("no backlog: the arrived, unfinished enrollments were never more after the kill (%d at most) than before it (%d): the survivor kept up with the offered rate throughout",
			r.peak, r.baseline)
	}
	tb.Logf("failover: two daemons on PostgreSQL, %d agents arriving at %.1f/s (Poisson), each request to the next daemon in turn and, on a connection error, to the next;"+
		" one daemon killed with SIGKILL at %.0f %% of the arrivals, not restarted\n"+
		"  %s; the first enrollment arriving after the kill done %v after it\n"+
		"  %d agents saw a request fail (in flight on the killed daemon) and retried (attestation-agent's backoff, from 1 s), the last of them done %v after the kill, the slowest enrolled in %v;"+
		" %d requests sent on to the survivor after a connection error\n"+
		"  acknowledged before the kill %d, present after it %d; configured with the answer lost in the kill %d; %d machines, each configured with exactly one node.configured event: nothing lost, nothing duplicated\n  %s",
		r.agents, r.offered, 100*r.killAt, recovered, r.first.Round(time.Millisecond),
		r.retried, r.affected.Round(time.Millisecond), r.slowest.Round(time.Millisecond), r.failedOver, r.ackedBefore, r.presentAfter, r.answerLost, r.agents, r.pinned)
}

// rrClients gives each agent a client of its own that sends its requests
// to the daemons in turn, starting at the agent's index; all share one
// pool of connections.
type rrClients struct {
	base       *http.Transport
	hosts      []string
	by         map[*softTPM]*stormClient
	registers  []atomic.Int64
	attests    []atomic.Int64
	failedOver atomic.Int64
}

func newRRClients(daemons []*daemonProc, agents []*softTPM) *rrClients {
	r := &rrClients{base: &http.Transport{MaxIdleConnsPerHost: 1024}, by: map[*softTPM]*stormClient{},
		registers: make([]atomic.Int64, len(daemons)), attests: make([]atomic.Int64, len(daemons))}
	for _, d := range daemons {
		r.hosts = append(r.hosts, d.addr)
	}
	for i, a := range agents {
		t := &rrTransport{r: r}
		t.next.Store(int64(i))
		r.by[a] = agentClient(&http.Client{Transport: t}, "http://"+r.hosts[0])
	}
	return r
}

func (r *rrClients) of(s *softTPM) *stormClient { return r.by[s] }

func (r *rrClients) enroll(ctx context.Context, s *softTPM, lat *enrollLatency) error {
	return r.by[s].enroll(ctx, s, lat)
}

func (r *rrClients) close() { r.base.CloseIdleConnections() }

// served is how many Register and Attest requests each daemon was sent.
func (r *rrClients) served() (registers, attests []int) {
	for i := range r.hosts {
		registers = append(registers, int(r.registers[i].Load()))
		attests = append(attests, int(r.attests[i].Load()))
	}
	return registers, attests
}

// rrTransport sends each request to the next daemon in turn, whatever its
// URL's host; on a connection error (nothing sent), to the one after.
type rrTransport struct {
	r    *rrClients
	next atomic.Int64
}

func (t *rrTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := len(t.r.hosts)
	first := int(t.next.Add(1)-1) % n
	var err error
	for k := range n {
		i := (first + k) % n
		out := req.Clone(req.Context())
		out.URL.Host, out.Host = t.r.hosts[i], ""
		if req.Body != nil && k < n-1 {
			// The transport closes the body on every error: kept open
			// for the next daemon, which a refused dial has not read.
			out.Body = io.NopCloser(req.Body)
		}
		var resp *http.Response
		resp, err = t.r.base.RoundTrip(out)
		if err == nil {
			switch {
			case strings.HasSuffix(req.URL.Path, "/Register"):
				t.r.registers[i].Add(1)
			case strings.HasSuffix(req.URL.Path, "/Attest"):
				t.r.attests[i].Add(1)
			}
			return resp, nil
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			return nil, err
		}
		t.r.failedOver.Add(1)
	}
	return nil, err
}

// pgServer is the PostgreSQL server a DSN's socket leads to.
type pgServer struct {
	postmaster int
}

// postgresOf finds the postmaster of dsn's server from the lock file
// PostgreSQL keeps beside its socket (its first line is the PID).
func postgresOf(dsn string) (*pgServer, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, err
	}
	locks, _ := filepath.Glob(filepath.Join(u.Query().Get("host"), ".s.PGSQL.*.lock"))
	if len(locks) != 1 {
		return nil, fmt.Errorf("want one PostgreSQL socket lock file in %s, found %d", u.Query().Get("host"), len(locks))
	}
	b, err := os.ReadFile(locks[0])
	if err != nil {
		return nil, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(strings.TrimSpace(string(line)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", locks[0], err)
	}
	return &pgServer{postmaster: pid}, nil
}

// procs are the postmaster and its children.
func (s *pgServer) procs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	pids := []int{s.postmaster}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := procStat(pid); err == nil && f[1] == strconv.Itoa(s.postmaster) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procStat is /proc/PID/stat's fields from the state on (f[1] the
// parent's PID, f[11] and f[12] utime and stime, f[13] and f[14] the
// ended children's).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f, nil
}

// cpu is PostgreSQL's CPU time so far: the postmaster's own and its ended
// children's (which it waited for), and that of its living children. A
// child that ends between the two reads is missed (a few of them, each a
// connection the daemons' pools closed).
func (s *pgServer) cpu() (time.Duration, error) {
	pids, err := s.procs()
	if err != nil {
		return 0, err
	}
	var ticks int64
	for i, pid := range pids {
		f, err := procStat(pid)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue
		}
		fields := []int{11, 12}
		if i == 0 {
			fields = append(fields, 13, 14)
		}
		for _, k := range fields {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// pin moves PostgreSQL's processes to the daemons' CPU (into their
// cpuset, or by affinity), where the backends the postmaster forks
// later follow it; pin's restore moves them back first.
func (s *pgServer) pin(p *cpuPin) error {
	pids, err := s.procs()
	if err != nil {
		return err
	}
	if p.procs != "" {
		root := filepath.Dir(filepath.Dir(p.procs))
		p.undo = append(p.undo, func() error { return s.moveTo(filepath.Join(root, "cgroup.procs")) })
		return s.moveTo(p.procs)
	}
	_, all, err := stormCPUs()
	if err != nil {
		return err
	}
	var one unix.CPUSet
	one.Set(p.daemonCPU)
	p.undo = append(p.undo, func() error { return s.affinity(&all) })
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, &one); err != nil {
			return fmt.Errorf("pin PostgreSQL process %d to CPU %d: %w", pid, p.daemonCPU, err)
		}
	}
	return nil
}

// moveTo writes every PostgreSQL process into a cgroup.procs file.
func (s *pgServer) moveTo(procs string) error {
	pids, err := s.procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("move PostgreSQL process %d into %s: %w", pid, procs, err)
		}
	}
	return nil
}

func (s *pgServer) affinity(set *unix.CPUSet) error {
	pids, err := s.procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("PostgreSQL process %d: %w", pid, err)
		}
	}
	return nil
}

// verify checks that every PostgreSQL process may run on the daemons' CPU
// only, and returns how many it checked.
func (s *pgServer) verify(p *cpuPin) (int, error) {
	pids, err := s.procs()
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if _, err := threadsOn(pid, p.daemonCPU); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("PostgreSQL: %w", err)
		}
	}
	return len(pids), nil
}

// Sizes of TestEnrollmentStormPostgres.
const (
	pgShortAgents      = 40
	pgShortConcurrency = 10
	pgShortRate        = 10
)

// TestEnrollmentStormPostgres runs BenchmarkEnrollmentStormPostgres's
// PostgreSQL phases small, so that they cannot rot: two daemons on one
// PostgreSQL, each agent's Attest sent to the other daemon than its
// Register (40 agents, 10 at a time, the database checked), then the kill
// of one of them under 10 arrivals/s, nothing lost. It asserts no speed.
func TestEnrollmentStormPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds attestationd and runs two of them against PostgreSQL")
	}
	testenv.Integration(t, "enrollment storm on PostgreSQL: two daemons answering each other's challenges, one killed under load, nothing lost")
	testenv.LookPath(t, "go", "the Go toolchain")
	needCPUs(t, testenv.Missing)
	pgtest.DSN(t)
	bin := buildDaemon(t)
	keys, err := eccEKKeys(pgShortAgents)
	if err != nil {
		t.Fatal(err)
	}
	agents := softTPMs(t, privateKeys(keys))
	pin := pinStorm(t, testenv.Missing)
	c := pgClosedPhase(t, bin, pin, agents, pgShortConcurrency, 2)
	for i := range 2 {
		if c.registers[i] == 0 || c.attests[i] == 0 {
			t.Errorf("daemon %d was sent %d Register and %d Attest requests; want some of each on both", i, c.registers[i], c.attests[i])
		}
	}
	f := failoverPhase(t, bin, pin, agents, pgShortRate, 0.5)
	f.log(t)
	if f.ackedBefore == 0 || f.presentAfter != f.ackedBefore {
		t.Errorf("got %d acknowledged before the kill, %d of them present after; want some, all present", f.ackedBefore, f.presentAfter)
	}
	if f.failedOver == 0 {
		t.Errorf("no request was sent on to the survivor after a connection error: the kill proved nothing")
	}
	testenv.Note(t, "%d agents on two daemons over PostgreSQL: %.1f enrollments/s; kill -9 of one under %.1f/s: recovered in %v, none lost",
		len(agents), c.rate, f.offered, f.recovered.Round(time.Millisecond))
}
