package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// stormToken is the storm daemons' admin token.
const stormToken = "bench-admin-token-0123456789abcdef"

// buildDaemon builds attestationd into a temp dir.
func buildDaemon(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "attestationd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/attestation/attestation/controlplane/cmd/attestationd").CombinedOutput()
	if err != nil {
		tb.Fatalf("build attestationd: %v\n%s", err, out)
	}
	return bin
}

// daemonProc is attestationd running as a child process, with its data
// directory and address kept so that it can be started again on them.
type daemonProc struct {
	bin, dataDir, addr string
	pin                *cpuPin // nil: on any CPU
	// extra are flags added to the storm's ("--database", a URL).
	extra []string
	cmd   *exec.Cmd
	url   string
	// exited receives the end of the running process; nil when none runs.
	exited chan error
}

// startDaemon starts attestationd on a new data directory and a free
// port, on the daemon's CPU of pin (nil: anywhere), and waits until it is
// ready; it is stopped at the end of tb.
func startDaemon(tb testing.TB, bin string, pin *cpuPin) *daemonProc {
	tb.Helper()
	return startDaemonOn(tb, bin, pin, tb.TempDir())
}

// startDaemonOn is startDaemon on the data directory dataDir, with extra
// flags.
func startDaemonOn(tb testing.TB, bin string, pin *cpuPin, dataDir string, extra ...string) *daemonProc {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := &daemonProc{bin: bin, dataDir: dataDir, addr: addr, pin: pin, url: "http://" + addr, extra: extra}
	tb.Cleanup(d.stop)
	if err := d.start(); err != nil {
		tb.Fatal(err)
	}
	return d
}

// start runs the daemon and waits until /readyz answers 200.
func (d *daemonProc) start() error {
	// The storm's machines all come from 127.0.0.1: one source, which
	// the per-source rate would hold to one machine's pace.
	args := []string{"--listen", d.addr, "--data-dir", d.dataDir, "--ek-policy", "allowlist", "--log-level", "warn",
		"--register-rate", "0"}
	args = append(args, d.extra...)
	if d.pin != nil {
		d.cmd = d.pin.command(d.bin, args...)
	} else {
		d.cmd = exec.Command(d.bin, args...)
	}
	d.cmd.Env = append(os.Environ(), "ATTESTATION_ADMIN_TOKEN="+stormToken)
	d.cmd.Stderr = os.Stderr
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start attestationd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(d.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				d.exited = exited
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("attestationd exited before it was ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.cmd.Process.Kill()
			<-exited
			return fmt.Errorf("attestationd not ready within 30s: %v", err)
		}
	}
}

// pid is the daemon's process ID.
func (d *daemonProc) pid() int { return d.cmd.Process.Pid }

// stop ends the daemon with SIGTERM (SIGKILL after 15 s) and waits.
func (d *daemonProc) stop() {
	if d.exited == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.exited = nil
}

// kill ends the daemon with SIGKILL, as a crash would, and waits until it
// is gone.
func (d *daemonProc) kill() error {
	if d.exited == nil {
		return errors.New("attestationd is not running")
	}
	if err := d.cmd.Process.Kill(); err != nil {
		return err
	}
	<-d.exited
	d.exited = nil
	return nil
}

// cpu returns the user and system CPU time the daemon has used.
func (d *daemonProc) cpu() (time.Duration, error) { return procCPU(d.pid()) }

// procCPU is the user+system CPU time of process pid so far, its ended
// threads included.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces), from state.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// processCPU is the CPU time of this process (the load generator).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// written returns how many bytes the daemon has written with write(2) and
// the like (wchar in /proc/PID/io): its WAL and database pages, mostly,
// and its responses.
func (d *daemonProc) written() (int64, error) {
	v, err := procField(fmt.Sprintf("/proc/%d/io", d.pid()), "wchar")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// metrics scrapes the daemon's /metrics: each sample by its name and
// labels as written ("go_memstats_mallocs_total", `x{a="b"}`).
func (d *daemonProc) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: HTTP %d", resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("scrape /metrics: %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// counters are what the daemon's Go runtime has allocated so far, and the
// group commits its store has made and the updates they carried.
type counters struct{ mallocs, bytes, commits, updates float64 }

// minus is h less o.
func (h counters) minus(o counters) counters {
	return counters{h.mallocs - o.mallocs, h.bytes - o.bytes, h.commits - o.commits, h.updates - o.updates}
}

// scrape reads the daemon's allocation and commit counters on /metrics.
func (d *daemonProc) scrape(ctx context.Context) (counters, error) {
	m, err := d.metrics(ctx)
	if err != nil {
		return counters{}, err
	}
	var h counters
	for name, v := range map[string]*float64{
		"go_memstats_mallocs_total":       &h.mallocs,
		"go_memstats_alloc_bytes_total":   &h.bytes,
		"attestation_store_commits_total": &h.commits,
		"attestation_store_updates_total": &h.updates,
	} {
		var ok bool
		if *v, ok = m[name]; !ok {
			return counters{}, fmt.Errorf("/metrics has no %s", name)
		}
	}
	return h, nil
}

// durable asks the daemon whether its commits are fsynced, which only it
// can tell (SQLite's synchronous setting belongs to its connection), and
// says what it answered.
func (d *daemonProc) durable(ctx context.Context) (string, error) {
	m, err := d.metrics(ctx)
	if err != nil {
		return "", err
	}
	n, ok := m["attestation_database_synchronous"]
	switch {
	case !ok:
		return "", errors.New("the daemon does not report its database's synchronous setting (attestation_database_synchronous)")
	case n < 2:
		return "", fmt.Errorf("the daemon's database runs with synchronous=%v: its commits are not fsynced, so what it acknowledges may be lost", n)
	}
	return fmt.Sprintf("synchronous=%v (FULL: the WAL fsynced at every commit), as the daemon's SQLite reports it", n), nil
}

func (d *daemonProc) admin() []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+stormToken)
			return next(ctx, req)
		}
	}))}
}

// preRegister registers every agent's EK with a role and hostname, so that
// it is approved when it attests.
func preRegister(tb testing.TB, d *daemonProc, agents []*softTPM) {
	tb.Helper()
	client := attestationv1connect.NewMachineServiceClient(http.DefaultClient, d.url, d.admin()...)
	var g errgroup.Group
	g.SetLimit(32)
	for i, a := range agents {
		g.Go(func() error {
			_, err := client.RegisterMachine(context.Background(), connect.NewRequest(&attestationv1.RegisterMachineRequest{
				EkFingerprint: a.fingerprint, Role: "worker", Hostname: fmt.Sprintf("node-%d", i),
			}))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatalf("pre-register: %v", err)
	}
}

// dbAudit is what the daemon's database holds, as its API tells.
type dbAudit struct {
	// machines counts the machines by EK fingerprint; configured those
	// whose one-time config was fetched.
	machines, configured map[string]int
	// events counts node.configured events by EK fingerprint.
	events map[string]int
}

// audit lists every machine and every node.configured event.
func (d *daemonProc) audit(ctx context.Context) (*dbAudit, error) {
	a := &dbAudit{machines: map[string]int{}, configured: map[string]int{}, events: map[string]int{}}
	machines := attestationv1connect.NewMachineServiceClient(http.DefaultClient, d.url, d.admin()...)
	for page := ""; ; {
		resp, err := machines.ListMachines(ctx, connect.NewRequest(&attestationv1.ListMachinesRequest{PageSize: 1000, PageToken: page}))
		if err != nil {
			return nil, fmt.Errorf("list machines: %w", err)
		}
		for _, m := range resp.Msg.Machines {
			a.machines[m.EkFingerprint]++
			if m.ConfiguredAt != nil {
				a.configured[m.EkFingerprint]++
			}
		}
		if page = resp.Msg.NextPageToken; page == "" {
			break
		}
	}
	evs := attestationv1connect.NewEventServiceClient(http.DefaultClient, d.url, d.admin()...)
	for after := int64(0); ; {
		resp, err := evs.ListEvents(ctx, connect.NewRequest(&attestationv1.ListEventsRequest{
			Type: "node.configured", AfterSeq: after, PageSize: 1000,
		}))
		if err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		for _, e := range resp.Msg.Events {
			a.events[e.EkFingerprint]++
		}
		if after = resp.Msg.NextAfterSeq; after == 0 {
			break
		}
	}
	return a, nil
}

// check compares the database with the storm's agents, every one of which
// ended its enrollment: each has exactly one machine, configured, and
// exactly one node.configured event, and there is nothing else. It
// returns how many of the agents in acked (acknowledged enrollments: the
// config in hand) are present so.
func (a *dbAudit) check(agents []*softTPM, acked []bool) (present int, err error) {
	var errs []error
	for i, ag := range agents {
		fp := ag.fingerprint
		ok := a.machines[fp] == 1 && a.configured[fp] == 1 && a.events[fp] == 1
		if !ok {
			what := "its enrollment"
			if acked != nil && acked[i] {
				what = "its acknowledged enrollment"
			}
			errs = append(errs, fmt.Errorf("agent %d (EK %.12s): %s left %d machines, %d configured, %d node.configured events; want 1 of each",
				i, fp, what, a.machines[fp], a.configured[fp], a.events[fp]))
		}
		if ok && acked != nil && acked[i] {
			present++
		}
	}
	if n := sum(a.machines); n != len(agents) {
		errs = append(errs, fmt.Errorf("%d machines in the database, want %d", n, len(agents)))
	}
	if n := sum(a.events); n != len(agents) {
		errs = append(errs, fmt.Errorf("%d node.configured events, want %d", n, len(agents)))
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("and %d more", len(errs)-10))
	}
	return present, errors.Join(errs...)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
