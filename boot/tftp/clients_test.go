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
		// window is the windowsize asked for, 0 for none.
		window, wantWindow int
	}{
		{"blksize 1468", 1 << 20, 1468, 1468, 0, 0},
		{"blksize asked above the limit", 300_000, 8192, 1468, 0, 0},
		{"smaller blksize", 100_000, 1024, 1024, 0, 0},
		{"windowsize 16", 1 << 20, 1468, 1468, 16, 16},
		{"windowsize 64 at 512", 300_000, 512, 512, 64, 64},
		{"windowsize asked above the limit", 1 << 20, 1468, 1468, 1000, DefaultWindowSize},
		{"windowsize, a multiple of the window", 1468 * 16 * 4, 1468, 1468, 16, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), ",", "")
			want := ts.file(t, name, tc.size)
			local := filepath.Join(dir, name)
			args := []string{"--option", "blksize " + strconv.Itoa(tc.blksize), "--option", "tsize 0"}
			wantOACK := []string{"tsize: " + strconv.Itoa(tc.size) + ",", "blksize: " + strconv.Itoa(tc.wantBlksize) + ","}
			if tc.window != 0 {
				args = append(args, "--option", "windowsize "+strconv.Itoa(tc.window))
				wantOACK = append(wantOACK, "windowsize: "+strconv.Itoa(tc.wantWindow)+",")
			}
			out, err := run(t, atftp, append(args, "--verbose", "--trace", "-g", "-r", name, "-l", local, host, port)...)
			if err != nil {
				t.Fatalf("atftp: %v: %s", err, out)
			}
			oack := oackRE.FindString(out)
			for _, opt := range wantOACK {
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
			line := waitLog(t, ts.logs, "file="+name+" ")
			if w := max(tc.wantWindow, 1); !strings.Contains(line, " windowsize="+strconv.Itoa(w)) {
				t.Errorf("log line %q lacks windowsize=%d", line, w)
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
	// atftp sends what it is given; the server refuses what RFC 7440 does
	// not allow.
	for _, value := range []string{"0", "65536", "sixteen"} {
		t.Run("windowsize "+value, func(t *testing.T) {
			local := filepath.Join(dir, "refused-window")
			out, _ := run(t, atftp, "--option", "blksize 1468", "--option", "windowsize "+value, "--verbose",
				"-g", "-r", "blksize-1468", "-l", local, host, port)
			// atftp exits 0 on an error packet answering its request.
			if want := `bad windowsize "` + value + `": want 1..65535`; !strings.Contains(out, want) {
				t.Errorf("atftp with windowsize %s: %q, want the error %q", value, out, want)
			}
			if b, _ := os.ReadFile(local); len(b) > 0 {
				t.Errorf("atftp with windowsize %s wrote %d bytes", value, len(b))
			}
		})
	}
	t.Run("windowsize 16 losing packets", func(t *testing.T) {
		ts := startServer(t, Options{Timeout: 300 * time.Millisecond})
		want := ts.file(t, "f.bin", 300_000)
		proxy := newLossyProxy(t, ts.addr, 25, 10)
		host, port := hostPort(t, proxy.Addr)
		local := filepath.Join(t.TempDir(), "f.bin")
		out, err := run(t, atftp, "--option", "blksize 1468", "--option", "windowsize 16", "--tftp-timeout", "1",
			"-g", "-r", "f.bin", "-l", local, host, port)
		if err != nil {
			t.Fatalf("atftp through the lossy proxy: %v: %s", err, out)
		}
		if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, want) {
			t.Errorf("atftp got %d bytes (%v), want the %d of the file", len(got), err, len(want))
		}
		// The server is done once the proxy has relayed the last ACK.
		waitLog(t, ts.logs, `msg="tftp transfer" client=127.0.0.1:`)
		data, acks := proxy.lostPackets()
		if data == 0 || acks == 0 {
			t.Errorf("the proxy lost %d DATA and %d ACK packets, want some of each", data, acks)
		}
		t.Logf("lost %d DATA and %d ACK packets of a 300 KB transfer", data, acks)
	})
	src := filepath.Join(dir, "blksize-1468")
	out, err := run(t, atftp, "--verbose", "-p", "-l", src, "-r", "upload.bin", host, port)
	if err == nil || !strings.Contains(out, "read-only") {
		t.Errorf("atftp put: %v: %q, want a failure with the read-only error", err, out)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "upload.bin")); !os.IsNotExist(err) {
		t.Errorf("upload.bin exists after a refused put (stat: %v)", err)
	}
}
