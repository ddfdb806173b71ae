package tftp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"golang.org/x/sys/unix"
)

// The figures: `make bench` runs
//
//	go test -run '^$' -bench . -benchtime 3x ./boot/tftp/
//
// Each server runs alone on CPU 0 (this server as a child process, the
// test binary running TestHelperServer), the clients on CPU 1 (this
// process and the atftp processes it starts), so a figure measures one
// core of server against one core of client; the reference servers run
// in the foreground as children of the benchmark.
//
//   - BenchmarkLockstep50MB: 50 MB at blksize 1468 without windowsize,
//     pin/tftp's client and atftp, against tftpd-hpa: MB/s, µs per block
//     and ours/tftpd-hpa.
//   - BenchmarkWindowsize: 1 MB and 50 MB at blksize 1468 and windowsize
//     16 and 64, atftp and pin/tftp's client, against atftpd (Debian's
//     atftpd, or extracted from its package: it conflicts with
//     tftpd-hpa): MB/s and ours/atftpd.
//   - BenchmarkStorm: 1,000 clients fetching undionly.kpxe and 1,000
//     fetching snponly.efi (Debian's ipxe), all at once, with atftp and
//     with pin/tftp's client, against tftpd-hpa: the storm's time, p50 and
//     p99 per transfer, failures, and tftpd-hpa's time/ours.

const (
	serverCPU = 0
	clientCPU = 1
	benchSize = 50 << 20
)

// benchDir is a directory the reference servers can read after dropping
// to their unprivileged users (t.TempDir is 0700), with the named files
// of the given sizes (random bytes) and "ready", which says a server
// answers.
func benchDir(b *testing.B, files map[string]int) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "tftpbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for name, size := range files {
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte("ok"), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// pinClients moves this process's threads to the clients' CPU until the
// benchmark ends; children started meanwhile (atftp) inherit it.
func pinClients(b *testing.B) {
	b.Helper()
	if runtime.NumCPU() < 2 {
		b.Fatalf("needs 2 CPUs to pin the servers and the clients apart, have %d", runtime.NumCPU())
	}
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		b.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	if out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(clientCPU), pid).CombinedOutput(); err != nil {
		b.Fatalf("pin the clients to CPU %d: %v: %s", clientCPU, err, out)
	}
	var cpus []string
	for i := range 1024 {
		if was.IsSet(i) {
			cpus = append(cpus, strconv.Itoa(i))
		}
	}
	b.Cleanup(func() { exec.Command("taskset", "-a", "-p", "-c", strings.Join(cpus, ","), pid).Run() })
}

func freeUDPPort(b *testing.B) string {
	b.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	return strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
}

// startPinned starts a server on the servers' CPU, stopped when the
// benchmark ends, and returns it.
func startPinned(b *testing.B, name string, args ...string) *exec.Cmd {
	b.Helper()
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(serverCPU), name}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// waitReady waits until the server on addr serves "ready".
func waitReady(b *testing.B, name, addr string) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := fetchGo(addr, "ready", 512, 0); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s on %s does not answer", name, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startOurs runs this server on dir in a child process and returns its
// address and process ID.
func startOurs(b *testing.B, dir string) (string, int) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("taskset", "-c", strconv.Itoa(serverCPU), exe, "-test.run", "^TestHelperServer$")
	cmd.Env = append(os.Environ(), "TFTP_BENCH_ROOT="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	// The helper serves until its stdin closes.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("our server's address: %v", err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line), cmd.Process.Pid
}

// peakRSS is the largest resident set of process pid so far, in MB.
func peakRSS(b *testing.B, pid int) float64 {
	b.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(kb, "kB")))
			return float64(n) / 1024
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestHelperServer is the server of the benchmarks, run by startOurs in
// a child process: it prints its address and serves TFTP_BENCH_ROOT until
// its stdin closes.
func TestHelperServer(t *testing.T) {
	root := os.Getenv("TFTP_BENCH_ROOT")
	if root == "" {
		t.Skip("run by the benchmarks")
	}
	srv, err := New(Options{Addr: "127.0.0.1:0", Root: root, IPXEDir: root, Logger: slog.New(slog.DiscardHandler),
		Listening: func(a net.Addr) { fmt.Println(a) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// startTFTPDHPA runs in.tftpd on dir; "" when it is not installed.
func startTFTPDHPA(b *testing.B, dir string) string {
	b.Helper()
	bin, err := exec.LookPath("in.tftpd")
	if err != nil {
		b.Log("SKIP tftpd-hpa: in.tftpd not installed (apt-get install tftpd-hpa)")
		return ""
	}
	addr := "127.0.0.1:" + freeUDPPort(b)
	startPinned(b, bin, "-L", "-s", dir, "-a", addr)
	waitReady(b, "in.tftpd", addr)
	return addr
}

// atftpdPaths are where atftpd is looked for beside PATH: tftpd-hpa
// conflicts with Debian's atftpd, so tools/deps.sh bench extracts it there
// when tftpd-hpa is installed.
var atftpdPaths = []string{"/usr/local/lib/attestation-bench/atftpd/usr/sbin/atftpd"}

// startATFTPD runs atftpd on dir; "" when it is not found.
func startATFTPD(b *testing.B, dir string) string {
	b.Helper()
	bin, err := exec.LookPath("atftpd")
	if err != nil {
		for _, p := range atftpdPaths {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		b.Log("SKIP atftpd: not installed (tools/deps.sh bench extracts it)")
		return ""
	}
	port := freeUDPPort(b)
	startPinned(b, bin, "--daemon", "--no-fork", "--bind-address", "127.0.0.1", "--port", port,
		"--user", "nobody", "--group", "nogroup", "--logfile", "/dev/null", dir)
	addr := "127.0.0.1:" + port
	waitReady(b, "atftpd", addr)
	return addr
}

// fetchGo fetches name with pin/tftp's client into io.Discard, asking
// for windowsize window unless it is 0.
func fetchGo(addr, name string, blksize, window int) (int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return 0, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(blksize)
	c.SetWindowSize(window)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return 0, err
	}
	return wt.WriteTo(io.Discard)
}

// fetchATFTP fetches name with atftp into /dev/null and returns size
// when atftp succeeds (it does not say how much it got).
func fetchATFTP(addr, name string, blksize, window int, size int64) (int64, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"--option", "blksize " + strconv.Itoa(blksize)}
	if window != 0 {
		args = append(args, "--option", "windowsize "+strconv.Itoa(window))
	}
	out, err := exec.CommandContext(ctx, "atftp", append(args, "-g", "-r", name, "-l", "/dev/null", host, port)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("atftp: %v: %s", err, out)
	}
	return size, nil
}

// client is one of the benchmarks' TFTP clients.
type client struct {
	name  string
	fetch func(addr, name string, blksize, window int, size int64) (int64, error)
}

var clients = []client{
	{"go", func(addr, name string, blksize, window int, _ int64) (int64, error) {
		return fetchGo(addr, name, blksize, window)
	}},
	{"atftp", fetchATFTP},
}

func needATFTP(b *testing.B) {
	if _, err := exec.LookPath("atftp"); err != nil {
		b.Skip("SKIP: atftp not installed (apt-get install atftp)")
	}
}

// server is a TFTP server the benchmarks fetch from.
type server struct{ name, addr string }

// startServers pins the clients, starts this server and the reference
// server named ref on dir, and returns them, this one first, and this
// one's process ID. The reference is left out when it is not installed.
func startServers(b *testing.B, dir, ref string, start func(*testing.B, string) string) ([]server, int) {
	b.Helper()
	pinClients(b)
	ours, pid := startOurs(b, dir)
	servers := []server{{"ours", ours}}
	if addr := start(b, dir); addr != "" {
		servers = append(servers, server{ref, addr})
	}
	return servers, pid
}

// timeFetches fetches name of size from each server with c, n times one
// after the other, and returns each server's total time.
func timeFetches(b *testing.B, c client, servers []server, name string, size int64, window, n int) []time.Duration {
	b.Helper()
	took := make([]time.Duration, len(servers))
	for i, s := range servers {
		start := time.Now()
		for range n {
			got, err := c.fetch(s.addr, name, DefaultBlockSize, window, size)
			if err != nil || got != size {
				b.Fatalf("fetch %s from %s (%s): %d bytes, %v", name, s.name, s.addr, got, err)
			}
		}
		took[i] += time.Since(start)
	}
	return took
}

// mbps is the throughput of n bytes in d.
func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func BenchmarkLockstep50MB(b *testing.B) {
	dir := benchDir(b, map[string]int{"50mb.bin": benchSize})
	servers, _ := startServers(b, dir, "tftpd-hpa", startTFTPDHPA)
	blocks := float64(benchSize/DefaultBlockSize + 1)
	for _, c := range clients {
		b.Run("client="+c.name, func(b *testing.B) {
			if c.name == "atftp" {
				needATFTP(b)
			}
			total := make([]time.Duration, len(servers))
			for b.Loop() {
				for i, d := range timeFetches(b, c, servers, "50mb.bin", benchSize, 0, 1) {
					total[i] += d
				}
			}
			for i, s := range servers {
				b.ReportMetric(mbps(int64(b.N)*benchSize, total[i]), s.name+"_MB/s")
				b.ReportMetric(float64(total[i].Microseconds())/float64(b.N)/blocks, s.name+"_µs/block")
			}
			if len(servers) == 2 {
				b.ReportMetric(total[1].Seconds()/total[0].Seconds(), "ratio")
			}
		})
	}
}

func BenchmarkWindowsize(b *testing.B) {
	dir := benchDir(b, map[string]int{"50mb.bin": benchSize, "1mb.bin": 1 << 20})
	servers, _ := startServers(b, dir, "atftpd", startATFTPD)
	for _, f := range []struct {
		name string
		size int64
		// n fetches make one measurement: a 1 MB fetch is over in a few
		// milliseconds, atftp's start included.
		n int
	}{{"1mb.bin", 1 << 20, 20}, {"50mb.bin", benchSize, 1}} {
		for _, window := range []int{16, 64} {
			for _, c := range clients {
				b.Run(fmt.Sprintf("size=%s/windowsize=%d/client=%s", strings.TrimSuffix(f.name, ".bin"), window, c.name), func(b *testing.B) {
					if c.name == "atftp" {
						needATFTP(b)
					}
					total := make([]time.Duration, len(servers))
					for b.Loop() {
						for i, d := range timeFetches(b, c, servers, f.name, f.size, window, f.n) {
							total[i] += d
						}
					}
					for i, s := range servers {
						b.ReportMetric(mbps(int64(b.N*f.n)*f.size, total[i]), s.name+"_MB/s")
					}
					if len(servers) == 2 {
						b.ReportMetric(total[1].Seconds()/total[0].Seconds(), "ratio")
					}
				})
			}
		}
	}
}

// stormResult is one storm against one server.
type stormResult struct {
	Took      time.Duration
	Transfers []time.Duration
	Failures  int
	// Errors are the first failures' errors.
	Errors []string
	// ClientCPU is the CPU time of the atftp processes.
	ClientCPU time.Duration
}

// fetchSpec is one fetch of a storm.
type fetchSpec struct {
	Name string
	Size int64
}

// add records one fetch.
func (r *stormResult) add(d time.Duration, f fetchSpec, n int64, err error) {
	r.Transfers = append(r.Transfers, d)
	if err != nil || n != f.Size {
		if r.Failures++; len(r.Errors) < 3 {
			r.Errors = append(r.Errors, fmt.Sprintf("fetch %s: %d bytes, %v", f.Name, n, err))
		}
	}
}

// stormGo starts every fetch at once with pin/tftp's client, a goroutine
// each, and waits for them all.
func stormGo(b *testing.B, addr string, fetches []fetchSpec) stormResult {
	var (
		mu  sync.Mutex
		res stormResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	for _, f := range fetches {
		wg.Go(func() {
			t0 := time.Now()
			n, err := fetchGo(addr, f.Name, DefaultBlockSize, 0)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			res.add(d, f, n, err)
		})
	}
	wg.Wait()
	res.Took = time.Since(start)
	return res
}

// stormATFTP runs TestHelperStorm in a child process, which starts an
// atftp process for each fetch: a process of its own that reaps only
// atftp processes, and starts them as fast as a shell loop would (a
// goroutine each in this process would cost a thread each, waiting).
func stormATFTP(b *testing.B, addr string, fetches []fetchSpec) stormResult {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	spec, _ := json.Marshal(fetches)
	cmd := exec.Command(exe, "-test.run", "^TestHelperStorm$")
	cmd.Env = append(os.Environ(), "TFTP_BENCH_STORM="+addr, "TFTP_BENCH_FETCHES="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("storm helper: %v", err)
	}
	var res stormResult
	for line := range strings.SplitSeq(string(out), "\n") {
		if j, ok := strings.CutPrefix(line, "storm: "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				b.Fatal(err)
			}
			return res
		}
	}
	b.Fatalf("storm helper printed no result:\n%s", out)
	return res
}

// TestHelperStorm is stormATFTP's child process: it starts an atftp
// process for each of TFTP_BENCH_FETCHES (JSON) from TFTP_BENCH_STORM,
// one after the other without waiting, reaps them as they end, and prints
// the stormResult as JSON after "storm: ".
func TestHelperStorm(t *testing.T) {
	addr := os.Getenv("TFTP_BENCH_STORM")
	if addr == "" {
		t.Skip("run by the benchmarks")
	}
	var fetches []fetchSpec
	if err := json.Unmarshal([]byte(os.Getenv("TFTP_BENCH_FETCHES")), &fetches); err != nil {
		t.Fatal(err)
	}
	atftp, err := exec.LookPath("atftp")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	type running struct {
		f     fetchSpec
		start time.Time
	}
	procs := map[int]running{}
	var res stormResult
	start := time.Now()
	for _, f := range fetches {
		p, err := os.StartProcess(atftp, []string{"atftp", "--option", "blksize " + strconv.Itoa(DefaultBlockSize),
			"-g", "-r", f.Name, "-l", os.DevNull, host, port}, &os.ProcAttr{Files: []*os.File{null, null, null}})
		if err != nil {
			t.Fatal(err)
		}
		procs[p.Pid] = running{f, time.Now()}
		p.Release()
	}
	for len(procs) > 0 {
		var (
			ws syscall.WaitStatus
			ru syscall.Rusage
		)
		pid, err := syscall.Wait4(-1, &ws, 0, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		r, ok := procs[pid]
		if !ok {
			continue
		}
		delete(procs, pid)
		res.ClientCPU += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		// atftp exits 0 when it got the whole file and does not say how
		// much that was.
		n, err := r.f.Size, error(nil)
		if !ws.Exited() || ws.ExitStatus() != 0 {
			n, err = 0, fmt.Errorf("atftp: %v", ws)
		}
		res.add(time.Since(r.start), r.f, n, err)
	}
	res.Took = time.Since(start)
	j, _ := json.Marshal(res)
	fmt.Printf("storm: %s\n", j)
}

// quantile is the q-quantile of ds, which it sorts.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[int(q*float64(len(ds)-1))]
}

func BenchmarkStorm(b *testing.B) {
	const perFile = 1000
	files := map[string]int64{}
	for _, name := range []string{"undionly.kpxe", "snponly.efi"} {
		fi, err := os.Stat(filepath.Join(DefaultIPXEDir, name))
		if err != nil {
			b.Fatalf("%v (Debian package ipxe)", err)
		}
		files[name] = fi.Size()
	}
	dir := benchDir(b, nil)
	for name := range files {
		data, err := os.ReadFile(filepath.Join(DefaultIPXEDir, name))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// The fetches, the files' alternating.
	var fetches []fetchSpec
	for range perFile {
		for _, name := range slices.Sorted(maps.Keys(files)) {
			fetches = append(fetches, fetchSpec{name, files[name]})
		}
	}
	servers, pid := startServers(b, dir, "tftpd-hpa", startTFTPDHPA)
	for _, c := range []struct {
		name  string
		storm func(b *testing.B, addr string, fetches []fetchSpec) stormResult
	}{{"go", stormGo}, {"atftp", stormATFTP}} {
		b.Run("client="+c.name, func(b *testing.B) {
			if c.name == "atftp" {
				needATFTP(b)
			}
			results := make([]stormResult, len(servers))
			for b.Loop() {
				for i, s := range servers {
					r := c.storm(b, s.addr, fetches)
					for _, e := range r.Errors {
						b.Logf("%s: %s", s.name, e)
					}
					results[i].Took += r.Took
					results[i].Transfers = append(results[i].Transfers, r.Transfers...)
					results[i].Failures += r.Failures
					results[i].ClientCPU += r.ClientCPU
				}
			}
			for i, s := range servers {
				r := results[i]
				b.ReportMetric(r.Took.Seconds()/float64(b.N), s.name+"_s")
				b.ReportMetric(quantile(r.Transfers, 0.5).Seconds()*1000, s.name+"_p50_ms")
				b.ReportMetric(quantile(r.Transfers, 0.99).Seconds()*1000, s.name+"_p99_ms")
				b.ReportMetric(float64(r.Failures)/float64(b.N), s.name+"_failures/op")
				if r.ClientCPU > 0 {
					b.ReportMetric(r.ClientCPU.Seconds()/float64(b.N), s.name+"_clients_cpu_s")
				}
			}
			if len(servers) == 2 {
				b.ReportMetric(results[1].Took.Seconds()/results[0].Took.Seconds(), "ratio")
			}
			b.ReportMetric(peakRSS(b, pid), "ours_peak_RSS_MB")
		})
	}
}
