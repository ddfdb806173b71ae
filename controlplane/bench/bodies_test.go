package bench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// zeroReader is n zero bytes, never held in memory.
type zeroReader struct{ left int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.left)
	clear(p[:n])
	z.left -= n
	return int(n), nil
}

// gzipZeros is gzip (at level) of n zero bytes.
func gzipZeros(n int64, level int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, level)
	io.Copy(zw, &zeroReader{left: n})
	zw.Close()
	return buf.Bytes()
}

// procStatus reads a kB field (VmRSS, VmHWM) of /proc/PID/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procCPU is the user+system CPU time of process pid so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces), from state.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100, nil // USER_HZ
}

// pinSelf moves every thread of this process to cpu (threads made later
// inherit it) and returns what puts them back where they were, so that
// the benchmarks after this one run as before.
func pinSelf(cpu int) (restore func(), err error) {
	var was, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := setAffinity(&set); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { setAffinity(&was) }, nil
}

// setAffinity sets the CPUs of every thread of this process.
func setAffinity(set *unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, set); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

// BenchmarkOversizedBodies measures what an attacker on the agents'
// network gets from sending oversized bodies without a token: the
// daemon's peak RSS while 100 clients each post a 10 MB body and 100 a
// gzip bomb (1 GB of zeros at gzip -1, 4.3 MB) to AgentService.Register at
// once, beside its RSS at rest (target: under 2x), and then 100 small
// bombs (under the 1 MiB limit, inflating to 200 MB each), which the
// daemon must inflate to find out. The daemon runs on CPU 0, the clients
// on CPU 1; its CPU time comes from /proc/PID/stat.
func BenchmarkOversizedBodies(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Fatalf("needs 2 CPUs to pin the daemon and the clients apart, have %d", runtime.NumCPU())
	}
	bin := buildDaemon(b)
	big := gzipZeros(1<<30, gzip.BestSpeed)
	small := gzipZeros(200<<20, gzip.BestCompression)
	restore, err := pinSelf(1)
	if err != nil {
		b.Fatalf("pin the clients to CPU 1: %v", err)
	}
	b.Cleanup(restore)
	// Each phase has a daemon of its own: what one leaves in the heap
	// would count as the next one's rest.
	phase := func(name string, run func(send sender, wg *sync.WaitGroup, codes chan<- int)) {
		d := startDaemonOn(b, bin, "0")
		defer d.stop()
		pid := d.cmd.Process.Pid
		send := newSender(d.url + "/attestation.v1.AgentService/Register")
		// At rest: started, and a few small requests served.
		for range 10 {
			send(func() io.Reader { return strings.NewReader("") }, 0, false)
		}
		time.Sleep(time.Second)
		rest, err := procStatus(pid, "VmRSS")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			b.Fatalf("reset the daemon's peak RSS: %v", err)
		}
		cpu0, _ := procCPU(pid)
		codes := make(chan int, 1000)
		var wg sync.WaitGroup
		start := time.Now()
		run(send, &wg, codes)
		wg.Wait()
		took := time.Since(start)
		close(codes)
		byCode := map[int]int{}
		n := 0
		for c := range codes {
			byCode[c]++
			n++
		}
		cpu1, _ := procCPU(pid)
		peak, err := procStatus(pid, "VmHWM")
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%-44s rest RSS %5.1f MB  peak RSS %5.1f MB  peak/rest %.2fx  daemon CPU %6.2f ms/request  %d requests in %v, answers %v",
			name, mb(rest), mb(peak), float64(peak)/float64(rest), float64(cpu1-cpu0)/float64(time.Millisecond)/float64(n), n, took.Round(time.Millisecond), byCode)
		b.ReportMetric(float64(peak)/float64(rest), strings.ReplaceAll(name, " ", "_")+"_peak/rest")
	}
	for b.Loop() {
		phase("100 x 10 MB + 100 x gzip bomb (4.3 MB)", func(send sender, wg *sync.WaitGroup, codes chan<- int) {
			for range 100 {
				wg.Go(func() { codes <- send(func() io.Reader { return &zeroReader{left: 10 << 20} }, 10<<20, false) })
				wg.Go(func() { codes <- send(func() io.Reader { return bytes.NewReader(big) }, int64(len(big)), true) })
			}
		})
		phase(fmt.Sprintf("100 x gzip bomb under the limit (%d KB)", len(small)>>10), func(send sender, wg *sync.WaitGroup, codes chan<- int) {
			for range 100 {
				wg.Go(func() { codes <- send(func() io.Reader { return bytes.NewReader(small) }, int64(len(small)), true) })
			}
		})
		phase("100 x 10 MB chunked", func(send sender, wg *sync.WaitGroup, codes chan<- int) {
			for range 100 {
				wg.Go(func() {
					codes <- send(func() io.Reader { return io.MultiReader(&zeroReader{left: 10 << 20}) }, -1, false)
				})
			}
		})
	}
}

// sender posts a body (n bytes, -1: chunked; gzip-encoded or not) and
// returns the status, or 0 when the daemon closed the connection first.
type sender func(body func() io.Reader, n int64, gz bool) int

func newSender(url string) sender {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	return func(body func() io.Reader, n int64, gz bool) int {
		req, _ := http.NewRequest(http.MethodPost, url, body())
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/proto")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0 // the daemon answered and closed before the body was sent
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
