package httpboot_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// BenchmarkHTTPBootKernel is the HTTP boot figure: the kernel fetched by
// 200 concurrent clients (wrk), from attestationd (through the boot
// routes, at info log level, with the MAC and arch query the script puts
// on the URL) and from nginx (sendfile on) serving the same file in the
// same run, as aggregate GB/s and their ratio. Each server is measured
// twice, alternately; the better run counts.
func BenchmarkHTTPBootKernel(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not installed (apt-get install wrk): skipping the HTTP boot figure")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		b.Skip("nginx is not installed (apt-get install nginx-light): skipping the HTTP boot figure")
	}
	assets := b.TempDir()
	kernel := benchKernel(b)
	if err := os.WriteFile(filepath.Join(assets, "vmlinuz"), kernel, 0o644); err != nil {
		b.Fatal(err)
	}
	d := daemontest.Start(b, daemontest.Options{
		Config: func(c *config.Config) { c.BootAssets = assets },
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	ngx := startNginx(b, nginx, assets)
	ours := d.URL + "/boot/assets/vmlinuz?mac=52:54:00:12:34:56&arch=x86_64-efi"
	theirs := ngx + "/vmlinuz"
	for _, u := range []string{ours, theirs} {
		resp, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, kernel) {
			b.Fatalf("%s: got %s and %d bytes, want 200 and the %d-byte kernel", u, resp.Status, len(got), len(kernel))
		}
	}
	var best [2]float64
	for range 2 {
		for i, u := range []string{ours, theirs} {
			if gbps := runWrk(b, wrk, u); gbps > best[i] {
				best[i] = gbps
			}
		}
	}
	b.Logf("HTTP boot, %.1f MB kernel, 200 connections, wrk -t2 -d10s on 2 cores:", float64(len(kernel))/1e6)
	b.Logf("  attestationd  %.2f GB/s", best[0])
	b.Logf("  nginx         %.2f GB/s (sendfile on)", best[1])
	b.Logf("  ratio         %.2fx", best[0]/best[1])
	b.ReportMetric(best[0], "ours-GB/s")
	b.ReportMetric(best[1], "nginx-GB/s")
	b.ReportMetric(best[0]/best[1], "ratio")
}

// benchKernel is the host's kernel when there is one, else 8 MB of
// random bytes.
func benchKernel(b *testing.B) []byte {
	if ks, _ := filepath.Glob("/boot/vmlinuz-*"); len(ks) > 0 {
		if k, err := os.ReadFile(ks[0]); err == nil {
			return k
		}
	}
	k := make([]byte, 8<<20)
	rand.Read(k)
	return k
}

// startNginx runs nginx in the foreground as a child process on a
// loopback port, serving root, until the benchmark ends.
func startNginx(b *testing.B, nginx, root string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := b.TempDir()
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s;
    proxy_temp_path %[1]s;
    fastcgi_temp_path %[1]s;
    uwsgi_temp_path %[1]s;
    scgi_temp_path %[1]s;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {
        listen %[2]s;
        root %[3]s;
    }
}
`, dir, addr, root)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start nginx: %v", err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
	}
	b.Fatal("nginx did not listen within 10s")
	return ""
}

var transferRE = regexp.MustCompile(`Transfer/sec:\s+([0-9.]+)([KMG]?B)`)

// runWrk fetches url with 200 connections for 10 s and returns GB/s.
func runWrk(b *testing.B, wrk, url string) float64 {
	out, err := exec.Command(wrk, "-t2", "-c200", "-d10s", "--timeout", "30s", url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		b.Fatalf("wrk %s: errors:\n%s", url, out)
	}
	m := transferRE.FindSubmatch(out)
	if m == nil {
		b.Fatalf("wrk %s: no Transfer/sec in:\n%s", url, out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	scale := map[string]float64{"B": 1e-9, "KB": 1024e-9, "MB": 1024 * 1024e-9, "GB": 1024 * 1024 * 1024e-9}[string(m[2])]
	b.Logf("wrk %s: %s", url, strings.TrimSpace(string(m[0])))
	return v * scale
}
