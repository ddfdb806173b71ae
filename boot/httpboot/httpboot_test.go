package httpboot_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"

	"github.com/attestation/attestation/internal/testenv"
)

// bootDaemon starts a daemon whose boot assets directory holds a kernel
// (1 MiB of random bytes), an initramfs, an arm64 subdirectory, and a
// symlink to a file outside the directory.
func bootDaemon(t *testing.T) (d *daemontest.Daemon, kernel []byte) {
	t.Helper()
	assets := t.TempDir()
	kernel = make([]byte, 1<<20)
	rand.Read(kernel)
	if err := os.WriteFile(filepath.Join(assets, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(assets, "initrd.img"), []byte("initramfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(assets, "arm64"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(assets, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(assets, "arm64", "up")); err != nil {
		t.Fatal(err)
	}
	d = daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) {
		c.BootAssets = assets
		c.BootKernelArgs = "console=ttyS0 quiet"
		c.IPXEDir = t.TempDir()
	}})
	return d, kernel
}

// addMachines writes machines straight into the daemon's database.
func addMachines(t *testing.T, d *daemontest.Daemon, ms ...*store.Machine) {
	t.Helper()
	st, err := store.Open(t.Context(), d.DatabasePath())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, m := range ms {
		if _, err := st.Update(t.Context(), func(tx *store.Tx) error { return tx.InsertMachine(t.Context(), m) }); err != nil {
			t.Fatal(err)
		}
	}
}

// noRedirects is a client that fails on any redirect.
var noRedirects = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		return fmt.Errorf("redirected to %s", req.URL)
	},
}

func do(t *testing.T, method, url string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestScript(t *testing.T) {
	d, _ := bootDaemon(t)
	addMachines(t, d,
		&store.Machine{EKFingerprint: strings.Repeat("01", 32), State: lifecycle.Registered, MACs: []string{"52:54:00:00:00:01"}},
		&store.Machine{EKFingerprint: strings.Repeat("02", 32), State: lifecycle.Provisioned, MACs: []string{"52:54:00:00:00:02"}},
		&store.Machine{EKFingerprint: strings.Repeat("03", 32), State: lifecycle.Decommissioned, MACs: []string{"52:54:00:00:00:03"},
			SMBIOSUUID: "4c4c4544-0000-0000-0000-000000000003"},
	)
	for _, c := range []struct {
		name, query string
		code        int
		want        []string
	}{
		{"unknown UEFI", "mac=52:54:00:00:00:09&uuid=${uuid}&arch=x86_64-efi", 400, []string{"SMBIOS UUID"}},
		{"unknown UEFI, empty uuid", "mac=52:54:00:00:00:09&uuid=&arch=x86_64", 200, []string{
			"#!ipxe\n",
			"kernel " + d.URL + "/boot/assets/vmlinuz?mac=52:54:00:00:00:09&arch=x86_64-efi initrd=initrd.img attestation.url=" + d.URL + " console=ttyS0 quiet || goto failed\n",
			"initrd --name initrd.img " + d.URL + "/boot/assets/initrd.img?mac=52:54:00:00:00:09&arch=x86_64-efi || goto failed\n",
			"boot || goto failed\n"}},
		{"unknown BIOS", "mac=52-54-00-00-00-09&arch=i386", 200, []string{"initrd=initrd.img", "arch=x86_64-pcbios"}},
		{"registered", "mac=52:54:00:00:00:01&arch=x86_64-efi", 200, []string{"kernel " + d.URL + "/boot/assets/vmlinuz", "state registered"}},
		{"provisioned, upper-case MAC", "mac=52:54:00:00:00:02&arch=x86_64-efi", 200, []string{"exit 1\n"}},
		{"decommissioned", "mac=52:54:00:00:00:03&arch=x86_64-efi", 403, []string{"decommissioned", "reboot\n"}},
		{"decommissioned by UUID", "mac=52:54:00:00:00:0a&uuid=4C4C4544-0000-0000-0000-000000000003", 403, []string{"decommissioned"}},
		{"no mac", "arch=x86_64-efi", 400, []string{"mac is required"}},
		{"garbage mac", "mac=zz:54:00:00:00:01", 400, []string{"MAC address"}},
		{"garbage uuid", "mac=52:54:00:00:00:01&uuid=nope", 400, []string{"SMBIOS UUID"}},
		{"garbage arch", "mac=52:54:00:00:00:01&arch=riscv64-efi", 400, []string{"unknown architecture"}},
		{"unsupported option 93", "mac=52:54:00:00:00:01&arch=6", 400, []string{"not supported"}},
		{"bad escape", "mac=52:54:00:00:00:01&arch=%zz", 400, []string{"query"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, "GET", d.URL+"/boot/ipxe?"+c.query, nil)
			if resp.StatusCode != c.code {
				t.Fatalf("got %s, want %d; body:\n%s", resp.Status, c.code, body)
			}
			if !bytes.HasPrefix(body, []byte("#!ipxe\n")) {
				t.Errorf("got body not an iPXE script:\n%s", body)
			}
			for _, w := range c.want {
				if !bytes.Contains(body, []byte(w)) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
		})
	}
	t.Run("POST", func(t *testing.T) {
		resp, _ := do(t, "POST", d.URL+"/boot/ipxe?mac=52:54:00:00:00:01", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("got %s, want 405", resp.Status)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		_, body := do(t, "GET", d.URL+"/metrics", nil)
		for _, w := range []string{
			`attestation_boot_scripts_total{action="agent",arch="x86_64-efi"} 2`,
			`attestation_boot_scripts_total{action="local_disk",arch="x86_64-efi"} 1`,
			`attestation_boot_scripts_total{action="refuse",arch="unknown"} 1`,
			`attestation_boot_scripts_total{action="bad_request",arch="unknown"} 7`,
		} {
			if !bytes.Contains(body, []byte(w)) {
				t.Errorf("metrics lack %s", w)
			}
		}
	})
}

func TestAssets(t *testing.T) {
	d, kernel := bootDaemon(t)
	url := d.URL + "/boot/assets/vmlinuz?mac=52:54:00:00:00:01&arch=x86_64-efi"

	resp, body := do(t, "GET", url, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, kernel) {
		t.Fatalf("GET: got %s and %d bytes, want 200 and the %d-byte kernel", resp.Status, len(body), len(kernel))
	}
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lastMod == "" || resp.Header.Get("Content-Length") != fmt.Sprint(len(kernel)) || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("GET: got headers %v, want ETag, Last-Modified, Accept-Ranges and Content-Length %d", resp.Header, len(kernel))
	}
	for _, c := range []struct {
		name, method string
		h            http.Header
		code         int
		body         []byte
		contentRange string
	}{
		{name: "HEAD", method: "HEAD", code: 200, body: []byte{}},
		{name: "range", method: "GET", h: http.Header{"Range": {"bytes=100-199"}}, code: 206, body: kernel[100:200],
			contentRange: fmt.Sprintf("bytes 100-199/%d", len(kernel))},
		{name: "suffix range", method: "GET", h: http.Header{"Range": {"bytes=-10"}}, code: 206, body: kernel[len(kernel)-10:],
			contentRange: fmt.Sprintf("bytes %d-%d/%d", len(kernel)-10, len(kernel)-1, len(kernel))},
		{name: "open range", method: "GET", h: http.Header{"Range": {"bytes=1048000-"}}, code: 206, body: kernel[1048000:]},
		{name: "unsatisfiable range", method: "GET", h: http.Header{"Range": {"bytes=2000000-"}}, code: 416,
			contentRange: fmt.Sprintf("bytes */%d", len(kernel))},
		{name: "multi-range gets the whole file", method: "GET", h: http.Header{"Range": {"bytes=0-1,5-6"}}, code: 200, body: kernel},
		{name: "If-None-Match", method: "GET", h: http.Header{"If-None-Match": {etag}}, code: 304, body: []byte{}},
		{name: "If-Range with the ETag", method: "GET", h: http.Header{"Range": {"bytes=0-9"}, "If-Range": {etag}}, code: 206, body: kernel[:10]},
		{name: "If-Range with another ETag", method: "GET", h: http.Header{"Range": {"bytes=0-9"}, "If-Range": {`"other"`}}, code: 200, body: kernel},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, c.method, url, c.h)
			if resp.StatusCode != c.code {
				t.Fatalf("got %s, want %d", resp.Status, c.code)
			}
			if c.body != nil && !bytes.Equal(body, c.body) {
				t.Errorf("got %d bytes, want %d", len(body), len(c.body))
			}
			if c.contentRange != "" && resp.Header.Get("Content-Range") != c.contentRange {
				t.Errorf("got Content-Range %q, want %q", resp.Header.Get("Content-Range"), c.contentRange)
			}
			if c.method == "HEAD" && resp.Header.Get("Content-Length") != fmt.Sprint(len(kernel)) {
				t.Errorf("got Content-Length %q, want %d", resp.Header.Get("Content-Length"), len(kernel))
			}
		})
	}
	t.Run("metrics", func(t *testing.T) {
		_, body := do(t, "GET", d.URL+"/metrics", nil)
		for _, w := range []string{
			`attestation_boot_asset_requests_total{arch="x86_64-efi",code="206"} 4`,
			`attestation_boot_asset_requests_total{arch="x86_64-efi",code="416"} 1`,
			`attestation_boot_asset_bytes_total{arch="x86_64-efi"} `,
		} {
			if !bytes.Contains(body, []byte(w)) {
				t.Errorf("metrics lack %s", w)
			}
		}
	})
}

// rawGet sends path exactly as written (no client-side cleaning) and
// returns the status code.
func rawGet(t *testing.T, addr net.Addr, path string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAssetEscapes(t *testing.T) {
	d, _ := bootDaemon(t)
	for _, path := range []string{
		"/boot/assets/../../../../etc/passwd",
		"/boot/assets/../ipxe?mac=52:54:00:00:00:01",
		"/boot/assets/%2e%2e/%2e%2e/etc/passwd",
		"/boot/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"/boot/assets/arm64/../../secret",
		"/boot/assets//etc/passwd",
		"/boot/assets/%2fetc%2fpasswd",
		"/boot/assets/./vmlinuz",
		"/boot/assets/..%5c..%5csecret",
		"/boot/assets/vmlinuz%00",
		"/boot/assets/escape",
		"/boot/assets/arm64/up",
		"/boot/assets/arm64",
		"/boot/assets/arm64/",
		"/boot/assets/",
		"/boot/assets/nonexistent",
		"/boot/",
		"/boot/ipxe/",
	} {
		t.Run(path, func(t *testing.T) {
			code := rawGet(t, d.Addr, path)
			if code != http.StatusBadRequest && code != http.StatusNotFound {
				t.Errorf("got %d, want 400 or 404", code)
			}
		})
	}
	if code := rawGet(t, d.Addr, "/boot/assets/vmlinuz"); code != 200 {
		t.Errorf("the kernel itself: got %d, want 200", code)
	}
}

// TestCurl drives the routes with the real curl binary.
func TestCurl(t *testing.T) {
	testenv.Integration(t, "curl against the HTTP boot routes")
	curl := testenv.LookPath(t, "curl", "curl")
	d, kernel := bootDaemon(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), curl, append([]string{"-s", "--max-time", "10"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		return string(out)
	}
	url := d.URL + "/boot/assets/vmlinuz"
	if got, want := run("-o", "/dev/null", "-w", "%{http_code} %{size_download}", url), fmt.Sprintf("200 %d", len(kernel)); got != want {
		t.Errorf("GET: got %q, want %q", got, want)
	}
	if got := run("-r", "0-99", url); got != string(kernel[:100]) {
		t.Errorf("range 0-99: got %d bytes, want the kernel's first 100", len(got))
	}
	if got, want := run("-r", "0-99", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url), "206 100"; got != want {
		t.Errorf("range: got %q, want %q", got, want)
	}
	if got, want := run("-r", "5000000-", "-o", "/dev/null", "-w", "%{http_code}", url), "416"; got != want {
		t.Errorf("unsatisfiable range: got %q, want %q", got, want)
	}
	head := run("-I", url)
	if !strings.HasPrefix(head, "HTTP/1.1 200") || !strings.Contains(strings.ToLower(head), fmt.Sprintf("content-length: %d", len(kernel))) {
		t.Errorf("HEAD: got\n%s\nwant 200 with Content-Length %d", head, len(kernel))
	}
	// --path-as-is sends ../ unchanged; -L is absent, so a redirect would show as 3xx.
	for _, p := range []string{"/boot/assets/../../etc/passwd", "/boot/assets/%2e%2e/%2e%2e/etc/passwd", "/boot/assets/escape"} {
		if got := run("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", d.URL+p); got != "400" && got != "404" {
			t.Errorf("%s: got %s, want 400 or 404", p, got)
		}
	}
	if got := run(d.URL + "/boot/ipxe?mac=52:54:00:00:00:01&arch=x86_64-efi"); !strings.Contains(got, "initrd=initrd.img") {
		t.Errorf("script: got\n%s\nwant a kernel line with initrd=initrd.img", got)
	}
}
