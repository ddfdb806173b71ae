package bench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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

// BenchmarkOversizedBodies measures what an attacker on the agents'
// network gets from sending oversized bodies without a token: the
// daemon's peak RSS while 100 clients each post a 10 MB body and 100 a
// gzip bomb (1 GB of zeros at gzip -1, 4.3 MB) to AgentService.Register at
// once, beside its RSS at rest (target: under 2x), and then 100 small
// bombs (under the 1 MiB limit, inflating to 200 MB each), which the
// daemon must inflate to find out. The daemon runs on one CPU, the
// clients on another (cpuPin, as in the enrollment storm); its CPU time
// comes from /proc/PID/stat.
func BenchmarkOversizedBodies(b *testing.B) {
	needCPUs(b, fatalf)
	bin := buildDaemon(b)
	big := gzipZeros(1<<30, gzip.BestSpeed)
	small := gzipZeros(200<<20, gzip.BestCompression)
	pin := pinStorm(b, fatalf)
	b.Log("pinning: " + pin.how)
	// Each phase has a daemon of its own: what one leaves in the heap
	// would count as the next one's rest.
	phase := func(name string, run func(send sender, wg *sync.WaitGroup, codes chan<- int)) {
		d := startDaemon(b, bin, pin)
		defer d.stop()
		pid := d.pid()
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
