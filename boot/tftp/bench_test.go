package tftp

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// The figures: `make bench` runs
//
//	go test -run '^$' -bench . -benchtime 3x ./boot/tftp/
//
// BenchmarkThroughput50MB fetches a 50 MB file with blksize 1468 from this
// server and from tftpd-hpa (in.tftpd, run in the foreground as a child of
// the benchmark), with the same client, pin/tftp's or atftp, and reports
// each server's MB/s and ours/tftpd-hpa. BenchmarkConcurrent1000 runs
// 1,000 concurrent fetches of undionly.kpxe and reports the failures.

const benchSize = 50 << 20

// benchDir is a directory tftpd-hpa can read after dropping to its
// unprivileged user (t.TempDir is 0700).
func benchDir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "tftpbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
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

// startTFTPDHPA runs in.tftpd in the foreground on a loopback port until
// the benchmark ends; "" when it is not installed.
func startTFTPDHPA(b *testing.B, dir string) string {
	b.Helper()
	bin, err := exec.LookPath("in.tftpd")
	if err != nil {
		return ""
	}
	addr := "127.0.0.1:" + freeUDPPort(b)
	cmd := exec.Command(bin, "-L", "-s", dir, "-a", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start in.tftpd: %v", err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Ready when it answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := fetchGo(addr, "ready", 512); err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("in.tftpd on %s does not answer", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fetchGo fetches name with pin/tftp's client into io.Discard.
func fetchGo(addr, name string, blksize int) (int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return 0, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(blksize)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return 0, err
	}
	return wt.WriteTo(io.Discard)
}

// fetchATFTP fetches name with atftp into /dev/null.
func fetchATFTP(addr, name string, blksize int) (int64, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "atftp", "--option", "blksize "+strconv.Itoa(blksize),
		"-g", "-r", name, "-l", "/dev/null", host, port).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("atftp: %v: %s", err, out)
	}
	return benchSize, nil
}

func BenchmarkThroughput50MB(b *testing.B) {
	dir := benchDir(b)
	data := make([]byte, benchSize)
	rand.Read(data)
	for name, d := range map[string][]byte{"50mb.bin": data, "ready": []byte("ok")} {
		if err := os.WriteFile(filepath.Join(dir, name), d, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ours := startServer(b, Options{Root: dir})
	hpa := startTFTPDHPA(b, dir)
	if hpa == "" {
		b.Log("SKIP tftpd-hpa: in.tftpd not installed (apt-get install tftpd-hpa); reporting ours only")
	}
	clients := []struct {
		name  string
		fetch func(addr, name string, blksize int) (int64, error)
	}{{"client=go", fetchGo}, {"client=atftp", fetchATFTP}}
	for _, c := range clients {
		b.Run(c.name, func(b *testing.B) {
			if c.name == "client=atftp" {
				if _, err := exec.LookPath("atftp"); err != nil {
					b.Skip("SKIP: atftp not installed (apt-get install atftp)")
				}
			}
			var oursTime, hpaTime time.Duration
			for b.Loop() {
				for _, s := range []struct {
					addr string
					acc  *time.Duration
				}{{ours.addr, &oursTime}, {hpa, &hpaTime}} {
					if s.addr == "" {
						continue
					}
					start := time.Now()
					n, err := c.fetch(s.addr, "50mb.bin", 1468)
					if err != nil || n != benchSize {
						b.Fatalf("fetch from %s: %d bytes, %v", s.addr, n, err)
					}
					*s.acc += time.Since(start)
				}
			}
			mbps := func(d time.Duration) float64 { return float64(b.N) * benchSize / 1e6 / d.Seconds() }
			b.ReportMetric(mbps(oursTime), "ours_MB/s")
			if hpa != "" {
				b.ReportMetric(mbps(hpaTime), "tftpd-hpa_MB/s")
				b.ReportMetric(mbps(oursTime)/mbps(hpaTime), "ratio")
			}
		})
	}
}

func BenchmarkConcurrent1000(b *testing.B) {
	const clients = 1000
	ts := startServer(b, Options{})
	kpxe := filepath.Join(DefaultIPXEDir, "undionly.kpxe")
	data, err := os.ReadFile(kpxe)
	if err != nil {
		b.Logf("%s missing (Debian package ipxe): using 74 KB of random data", kpxe)
		data = make([]byte, 74_213)
		rand.Read(data)
	}
	if err := os.WriteFile(filepath.Join(ts.root, "undionly.kpxe"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	var failures atomic.Int64
	var total time.Duration
	for b.Loop() {
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				n, err := fetchGo(ts.addr, "undionly.kpxe", 1468)
				if err != nil || n != int64(len(data)) {
					if failures.Add(1) <= 3 {
						b.Logf("fetch: %d bytes, %v", n, err)
					}
				}
			})
		}
		wg.Wait()
		total += time.Since(start)
	}
	b.ReportMetric(float64(failures.Load())/float64(b.N), "failures/op")
	b.ReportMetric(float64(b.N*clients)/total.Seconds(), "transfers/s")
	b.ReportMetric(float64(b.N*clients*len(data))/1e6/total.Seconds(), "MB/s")
}
