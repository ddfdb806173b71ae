package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuffer collects log output from the server's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testServer struct {
	addr    string
	root    string
	ipxe    string
	logs    *logBuffer
	srv     *Server
	reg     *prometheus.Registry
	stopped chan error
}

// startServer runs a server on a loopback port with fresh assets and iPXE
// directories, stopping it when the test ends.
func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	ts := &testServer{logs: &logBuffer{}, reg: prometheus.NewRegistry(), stopped: make(chan error, 1)}
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	if opts.IPXEDir == "" {
		opts.IPXEDir = t.TempDir()
	}
	ts.root, ts.ipxe = opts.Root, opts.IPXEDir
	opts.Addr = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(ts.logs, nil))
	opts.Registerer = ts.reg
	listening := make(chan net.Addr, 1)
	opts.Listening = func(a net.Addr) { listening <- a }
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ts.stopped <- srv.Run(ctx) }()
	select {
	case a := <-listening:
		ts.addr = a.String()
	case err := <-ts.stopped:
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.stopped:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return after the context ended")
		}
	})
	return ts
}

// file writes a file of n random bytes under the assets directory.
func (ts *testServer) file(t testing.TB, name string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(ts.root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// get fetches name with pin/tftp's client; blksize and window 0 ask for
// none.
func get(addr, name string, blksize, window int, tsize bool) ([]byte, int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(2 * time.Second)
	if blksize != 0 {
		c.SetBlockSize(blksize)
	}
	c.SetWindowSize(window)
	c.RequestTSize(tsize)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size := int64(-1)
	if n, ok := wt.(tftp.IncomingTransfer).Size(); ok {
		size = n
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

func TestTransfers(t *testing.T) {
	ts := startServer(t, Options{})
	for _, tc := range []struct {
		name    string
		size    int
		blksize int
		window  int
		// What the log line reports.
		wantBlksize, wantWindow int
	}{
		{"empty", 0, 0, 0, 512, 1},
		{"one block exactly", 512, 0, 0, 512, 1},
		{"small default blksize", 10_000, 0, 0, 512, 1},
		{"blksize 1468", 1 << 20, 1468, 0, 1468, 1},
		{"multiple of 1468", 1468 * 7, 1468, 0, 1468, 1},
		{"smaller blksize honoured", 100_000, 1024, 0, 1024, 1},
		{"larger blksize clamped", 100_000, 8192, 0, 1468, 1},
		{"windowsize 16", 1 << 20, 1468, 16, 1468, 16},
		{"windowsize 4 at 512", 100_000, 0, 4, 512, 4},
		{"windowsize, multiple of the window", 1468 * 64 * 3, 1468, 64, 1468, 64},
		{"larger windowsize clamped", 1 << 20, 1468, 1000, 1468, DefaultWindowSize},
		{"windowsize, empty", 0, 1468, 16, 1468, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), ",", "") + ".bin"
			want := ts.file(t, name, tc.size)
			got, size, err := get(ts.addr, name, tc.blksize, tc.window, true)
			if err != nil {
				t.Fatalf("get %s: %v", name, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want the %d bytes of the file", len(got), len(want))
			}
			wantLog := []string{"msg=\"tftp transfer\"", "blksize=" + strconv.Itoa(tc.wantBlksize), "windowsize=" + strconv.Itoa(tc.wantWindow),
				"bytes=" + strconv.Itoa(tc.size), "client=127.0.0.1:", "duration="}
			// pin/tftp takes a tsize of 0 for the client's question and
			// leaves it out of the OACK.
			if tc.size > 0 {
				if size != int64(tc.size) {
					t.Errorf("tsize %d, want %d", size, tc.size)
				}
				wantLog = append(wantLog, "tsize="+strconv.Itoa(tc.size))
			}
			line := waitLog(t, ts.logs, "file="+name)
			for _, s := range wantLog {
				if !strings.Contains(line, s) {
					t.Errorf("log line %q lacks %q", line, s)
				}
			}
		})
	}
	if got := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(resultOK)); got != 12 {
		t.Errorf("transfers ok = %v, want 12", got)
	}
	if n, err := testutil.GatherAndCount(ts.reg, "attestation_tftp_transfer_duration_seconds", "attestation_tftp_sent_bytes_total"); err != nil || n != 2 {
		t.Errorf("gathered %d metrics (%v), want 2", n, err)
	}
}

func TestSubdirAndIPXE(t *testing.T) {
	ts := startServer(t, Options{})
	want := ts.file(t, "pxelinux.cfg/default", 3000)
	if got, _, err := get(ts.addr, "pxelinux.cfg/default", 0, 0, false); err != nil || !bytes.Equal(got, want) {
		t.Errorf("get pxelinux.cfg/default: %d bytes, %v; want the file", len(got), err)
	}

	kpxe := make([]byte, 70_000)
	rand.Read(kpxe)
	if err := os.WriteFile(filepath.Join(ts.ipxe, "undionly.kpxe"), kpxe, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts.ipxe, "other.rom"), kpxe, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _, err := get(ts.addr, "undionly.kpxe", 1468, 0, true); err != nil || !bytes.Equal(got, kpxe) {
		t.Errorf("get undionly.kpxe: %d bytes, %v; want the iPXE binary", len(got), err)
	}
	if _, _, err := get(ts.addr, "other.rom", 0, 0, false); err == nil {
		t.Errorf("get other.rom from the iPXE directory: no error, want only the iPXE binaries served from it")
	}
	// A file of that name in the assets directory wins.
	own := ts.file(t, "undionly.kpxe", 5000)
	if got, _, err := get(ts.addr, "undionly.kpxe", 0, 0, false); err != nil || !bytes.Equal(got, own) {
		t.Errorf("get undionly.kpxe with one in the assets: %d bytes, %v; want the assets' file", len(got), err)
	}
}

func TestRefused(t *testing.T) {
	ts := startServer(t, Options{})
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ts.root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../etc/passwd", filepath.Join(ts.root, "relescape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(ts.root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, result, message string
	}{
		{"parent", "../etc/passwd", resultDenied, errDenied.Error()},
		{"deep parent", "a/../../../../etc/passwd", resultDenied, errDenied.Error()},
		{"absolute", "/etc/passwd", resultDenied, errDenied.Error()},
		{"symlink outside", "escape", resultDenied, errDenied.Error()},
		{"relative symlink outside", "relescape", resultDenied, errDenied.Error()},
		{"missing", "nope.efi", resultNotFound, errNotFound.Error()},
		{"directory", "dir", resultNotFound, errNotFound.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(tc.result))
			got, _, err := get(ts.addr, tc.file, 0, 0, false)
			if err == nil {
				t.Fatalf("get %s: %d bytes, want an error", tc.file, len(got))
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("get %s: %v, want %q", tc.file, err, tc.message)
			}
			if after := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(tc.result)); after != before+1 {
				t.Errorf("transfers{result=%s} went from %v to %v, want one more", tc.result, before, after)
			}
		})
	}
}

func TestWriteRefused(t *testing.T) {
	ts := startServer(t, Options{})
	c, err := tftp.NewClient(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	rf, err := c.Send("upload.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("send: %v, want the read-only error", err)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "upload.bin")); !os.IsNotExist(err) {
		t.Errorf("upload.bin exists after a refused write (stat: %v)", err)
	}
	waitLog(t, ts.logs, "tftp write request refused")
}

// rawRequest sends a read request for name, with the options opts (each
// "name\x00value\x00"), from a raw socket, and returns the socket, the
// first packet the server answered with and where from.
func rawRequest(t *testing.T, addr, name, opts string) (conn *net.UDPConn, reply []byte, from *net.UDPAddr) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rrq := binary.BigEndian.AppendUint16(nil, 1)
	rrq = append(rrq, name+"\x00octet\x00"+opts...)
	if _, err := conn.WriteToUDP(rrq, srv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 600)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("read the server's first answer to %s: %v", name, err)
	}
	return conn, buf[:n], from
}

// tftpError is an ERROR packet.
func tftpError(code uint16, msg string) []byte {
	e := binary.BigEndian.AppendUint16(nil, 5)
	e = binary.BigEndian.AppendUint16(e, code)
	return append(e, msg+"\x00"...)
}

// holdTransfer sends a read request from a raw socket and never ACKs, so
// the transfer holds its slot; release ends it with an ERROR packet.
func holdTransfer(t *testing.T, addr, name string) (release func()) {
	t.Helper()
	conn, reply, from := rawRequest(t, addr, name, "")
	if op := binary.BigEndian.Uint16(reply); len(reply) < 4 || op != 3 {
		t.Fatalf("got opcode %d (%q), want DATA", op, reply)
	}
	return func() {
		conn.WriteToUDP(tftpError(0, "done"), from)
		conn.Close()
	}
}

func TestTransferLimit(t *testing.T) {
	ts := startServer(t, Options{MaxTransfers: 2, Timeout: 5 * time.Second, Retries: 1})
	want := ts.file(t, "big.bin", 100_000)
	r1 := holdTransfer(t, ts.addr, "big.bin")
	r2 := holdTransfer(t, ts.addr, "big.bin")
	for range 3 {
		if _, _, err := get(ts.addr, "big.bin", 0, 0, false); err == nil || !strings.Contains(err.Error(), "busy") {
			t.Fatalf("third transfer: %v, want the busy error", err)
		}
	}
	line := waitLog(t, ts.logs, "limit reached")
	if !strings.Contains(line, "max_transfers=2") {
		t.Errorf("log line %q lacks max_transfers=2", line)
	}
	if n := strings.Count(ts.logs.String(), "limit reached"); n != 1 {
		t.Errorf("%d limit lines for 3 refusals, want 1 (rate-limited)", n)
	}
	if got := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(resultBusy)); got != 3 {
		t.Errorf("transfers{result=busy} = %v, want 3", got)
	}
	r1()
	r2()
	// The slots come back once the held transfers end.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _, err := get(ts.addr, "big.bin", 0, 0, false)
		if err == nil {
			if !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want the file", len(got))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after releasing the held transfers: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSizeQuery asks as OVMF's UEFI PXE client does before it fetches
// its boot file: a read request with tsize and blksize, then ERROR code 8
// in answer to the OACK. That is a size query, not a failed transfer.
func TestSizeQuery(t *testing.T) {
	ts := startServer(t, Options{})
	want := ts.file(t, "snponly.efi", 10_000)
	conn, reply, from := rawRequest(t, ts.addr, "snponly.efi", "tsize\x000\x00blksize\x001468\x00")
	defer conn.Close()
	if op := binary.BigEndian.Uint16(reply); op != 6 || !bytes.Contains(reply, []byte("tsize\x0010000\x00")) {
		t.Fatalf("got opcode %d (%q), want an OACK with tsize 10000", op, reply)
	}
	if _, err := conn.WriteToUDP(tftpError(8, "User aborted the transfer"), from); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, ts.logs, "file=snponly.efi")
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, `msg="tftp size query"`) || !strings.Contains(line, "size=10000") {
		t.Errorf("log line %q, want an INFO tftp size query with size=10000", line)
	}
	// Then the firmware fetches the file.
	got, _, err := get(ts.addr, "snponly.efi", 1468, 0, true)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get after the size query: %d bytes, %v; want the file", len(got), err)
	}
	waitLog(t, ts.logs, `msg="tftp transfer"`)
	for result, want := range map[string]float64{resultSizeQuery: 1, resultOK: 1, resultFailed: 0} {
		if got := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(result)); got != want {
			t.Errorf("transfers{result=%s} = %v, want %v", result, got, want)
		}
	}
}

// TestBadOptions asks for windowsizes RFC 7440 does not allow: each
// request is refused with ERROR code 8 naming the option, counted and
// logged, before any option acknowledgment or data.
func TestBadOptions(t *testing.T) {
	ts := startServer(t, Options{})
	ts.file(t, "f.bin", 10_000)
	for _, value := range []string{"0", "65536", "-1", "sixteen", ""} {
		t.Run("windowsize "+value, func(t *testing.T) {
			before := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(resultBadOption))
			conn, reply, _ := rawRequest(t, ts.addr, "f.bin", "blksize\x001468\x00windowsize\x00"+value+"\x00")
			defer conn.Close()
			if op, code := binary.BigEndian.Uint16(reply), binary.BigEndian.Uint16(reply[2:]); op != 5 || code != 8 ||
				!bytes.Contains(reply, []byte(`windowsize "`+value+`"`)) {
				t.Errorf("got %q, want ERROR code 8 naming windowsize %q", reply, value)
			}
			// Counted once the handler returns, which can be after the
			// client has its answer.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				after := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(resultBadOption))
				if after == before+1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("transfers{result=bad_option} went from %v to %v, want one more", before, after)
				}
			}
		})
	}
	line := waitLog(t, ts.logs, `result=bad_option`)
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, `msg="tftp request refused"`) || !strings.Contains(line, "windowsize") {
		t.Errorf("log line %q, want a WARN tftp request refused naming windowsize", line)
	}
	if got := testutil.ToFloat64(ts.srv.metrics.transfers.WithLabelValues(resultOK)); got != 0 {
		t.Errorf("transfers ok = %v, want 0", got)
	}
}

// TestWindowSizeLoss fetches with windowsize 16 through a proxy that loses
// one DATA packet in 25 and one ACK in 10: the window is sent again from the last
// block acknowledged and the client gets the file's bytes.
func TestWindowSizeLoss(t *testing.T) {
	ts := startServer(t, Options{Timeout: 300 * time.Millisecond})
	want := ts.file(t, "f.bin", 300_000)
	proxy := newLossyProxy(t, ts.addr, 25, 10)
	c, err := tftp.NewClient(proxy.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(300 * time.Millisecond)
	c.SetBackoff(func(int) time.Duration { return 0 })
	c.SetBlockSize(1468)
	c.SetWindowSize(16)
	wt, err := c.Receive("f.bin", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil {
		t.Fatalf("receive through the lossy proxy: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("got %d bytes, want the %d of the file", got.Len(), len(want))
	}
	// The server is done once the proxy has relayed the last ACK.
	line := waitLog(t, ts.logs, "file=f.bin ")
	if !strings.Contains(line, `msg="tftp transfer"`) || !strings.Contains(line, " windowsize=16") {
		t.Errorf("log line %q, want a tftp transfer with windowsize 16", line)
	}
	data, acks := proxy.lostPackets()
	if data == 0 || acks == 0 {
		t.Errorf("the proxy lost %d DATA and %d ACK packets, want some of each", data, acks)
	}
	t.Logf("lost %d DATA and %d ACK packets of a 300 KB transfer", data, acks)
}

func TestRunStops(t *testing.T) {
	srv, err := New(Options{Addr: "127.0.0.1:0", IPXEDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil when the context ends", err)
	}
	bad, _ := New(Options{Addr: "127.0.0.1:0", Root: filepath.Join(t.TempDir(), "missing")})
	if err := bad.Run(context.Background()); err == nil {
		t.Errorf("Run with a missing assets directory: nil, want an error")
	}
	if _, err := New(Options{BlockSize: 100}); err == nil {
		t.Errorf("New with blksize 100: nil, want an error")
	}
	for _, w := range []int{-1, 65536} {
		if _, err := New(Options{WindowSize: w}); err == nil {
			t.Errorf("New with windowsize %d: nil, want an error", w)
		}
	}
}

// waitLog waits for a log line containing s and returns it.
func waitLog(t testing.TB, logs *logBuffer, s string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", s, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWildcardAddr serves an IPv4 client from a wildcard (dual-stack)
// socket, as the default ":69" listens.
func TestWildcardAddr(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), bytes.Repeat([]byte("x"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	listening := make(chan net.Addr, 1)
	srv, err := New(Options{Addr: ":0", Root: root, IPXEDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Listening: func(a net.Addr) { listening <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	port := (<-listening).(*net.UDPAddr).Port
	got, _, err := get("127.0.0.1:"+strconv.Itoa(port), "f", 1468, 0, true)
	if err != nil || len(got) != 5000 {
		t.Fatalf("get over IPv4 from the wildcard socket: %d bytes, %v", len(got), err)
	}
}
