package tftp

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/internal/testenv"
)

// needClient marks the test as an integration test with the TFTP client
// name and returns its path; without it the test skips, visibly, or
// fails under CI (`make test-deps` installs them).
func needClient(t *testing.T, name, pkg string) string {
	t.Helper()
	testenv.Integration(t, "TFTP client "+name)
	return testenv.LookPath(t, name, pkg)
}

// run runs a client with a time limit and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// escapes adds the files and links the refusal tests ask for.
func escapes(t *testing.T, ts *testServer) {
	t.Helper()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ts.root, "escape")); err != nil {
		t.Fatal(err)
	}
}

var oackRE = regexp.MustCompile(`received OACK <[^>]*>`)

var refusals = []struct{ name, file, message string }{
	{"parent", "../etc/passwd", "access violation"},
	{"absolute", "/etc/passwd", "access violation"},
	{"symlink outside", "escape", "access violation"},
	{"missing", "nope.efi", "file not found"},
}

// TestTFTPHPAClient fetches with tftp-hpa's client, which asks for no
// options (512-byte blocks), like most PXE ROMs' first try.
func TestTFTPHPAClient(t *testing.T) {
	tftpc := needClient(t, "tftp", "tftp-hpa")
	ts := startServer(t, Options{})
	host, port := hostPort(t, ts.addr)
	escapes(t, ts)
	dir := t.TempDir()
	for _, size := range []int{0, 512, 70_001, 1 << 20} {
		name := "f" + strconv.Itoa(size) + ".bin"
		want := ts.file(t, name, size)
		local := filepath.Join(dir, name)
		out, err := run(t, tftpc, "-m", "binary", host, port, "-c", "get", name, local)
		if err != nil || strings.Contains(out, "Error") {
			t.Fatalf("tftp get %s: %v: %s", name, err, out)
		}
		if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, want) {
			t.Errorf("tftp get %s: %d bytes (%v), want the %d of the file", name, len(got), err, size)
		}
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			local := filepath.Join(dir, "refused")
			out, _ := run(t, tftpc, "-m", "binary", host, port, "-c", "get", tc.file, local)
			// tftp-hpa exits 0 on a server error; it prints it.
			if !strings.Contains(out, "Error code 1: "+tc.message) {
				t.Errorf("tftp get %s: %q, want %q", tc.file, out, tc.message)
			}
			if b, _ := os.ReadFile(local); len(b) > 0 {
				t.Errorf("tftp get %s wrote %d bytes", tc.file, len(b))
			}
		})
	}
	src := filepath.Join(dir, "f512.bin")
	out, _ := run(t, tftpc, "-m", "binary", host, port, "-c", "put", src, "upload.bin")
	if !strings.Contains(out, "read-only") {
		t.Errorf("tftp put: %q, want the read-only error", out)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "upload.bin")); !os.IsNotExist(err) {
		t.Errorf("upload.bin exists after a refused put (stat: %v)", err)
	}
}

// TestATFTPClient fetches with atftp, asking for blksize and tsize, and
// reads the negotiated values from its trace of the OACK.
func TestATFTPClient(t *testing.T) {
	atftp := needClient(t, "atftp", "atftp")
	ts := startServer(t, Options{})
	host, port := hostPort(t, ts.addr)
	escapes(t, ts)
	dir := t.TempDir()
	for _, tc := range []struct {
		name        string
		size        int
		blksize     int
		wantBlksize int
	}{
		{"blksize 1468", 1 << 20, 1468, 1468},
		{"blksize asked above the limit", 300_000, 8192, 1468},
		{"smaller blksize", 100_000, 1024, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			want := ts.file(t, name, tc.size)
			local := filepath.Join(dir, name)
			out, err := run(t, atftp, "--option", "blksize "+strconv.Itoa(tc.blksize), "--option", "tsize 0",
				"--verbose", "--trace", "-g", "-r", name, "-l", local, host, port)
			if err != nil {
				t.Fatalf("atftp: %v: %s", err, out)
			}
			oack := oackRE.FindString(out)
			for _, opt := range []string{"tsize: " + strconv.Itoa(tc.size) + ",", "blksize: " + strconv.Itoa(tc.wantBlksize) + ","} {
				if !strings.Contains(oack, opt) {
					t.Errorf("atftp's OACK %q lacks %q:\n%.600s", oack, opt, out)
				}
			}
			if !strings.Contains(out, "size "+strconv.Itoa(tc.wantBlksize)+">") {
				t.Errorf("atftp trace shows no DATA block of %d bytes", tc.wantBlksize)
			}
			if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, want) {
				t.Errorf("atftp got %d bytes (%v), want the %d of the file", len(got), err, tc.size)
			}
		})
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			local := filepath.Join(dir, "refused")
			out, err := run(t, atftp, "--option", "blksize 1468", "--verbose", "-g", "-r", tc.file, "-l", local, host, port)
			if err == nil || !strings.Contains(out, tc.message) {
				t.Errorf("atftp get %s: %v: %q, want a failure with %q", tc.file, err, out, tc.message)
			}
		})
	}
	src := filepath.Join(dir, "blksize-1468")
	out, err := run(t, atftp, "--verbose", "-p", "-l", src, "-r", "upload.bin", host, port)
	if err == nil || !strings.Contains(out, "read-only") {
		t.Errorf("atftp put: %v: %q, want a failure with the read-only error", err, out)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "upload.bin")); !os.IsNotExist(err) {
		t.Errorf("upload.bin exists after a refused put (stat: %v)", err)
	}
}
