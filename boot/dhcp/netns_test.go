package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/logging"
	"github.com/attestation/attestation/controlplane/store"

	"github.com/attestation/attestation/internal/testenv"
)

// The server side of the namespace tests runs in this test binary,
// started again inside the server's namespace.
const (
	helperEnv     = "DHCP_TEST_SERVE_INTERFACE"
	helperModeEnv = "DHCP_TEST_SERVE_MODE"
	// helperPoolEnv overrides the full-mode pool, "FIRST-LAST";
	// helperDBEnv keeps its leases in a database at that path.
	helperPoolEnv = "DHCP_TEST_SERVE_POOL"
	helperDBEnv   = "DHCP_TEST_SERVE_DB"
	// helperLevelEnv is its log level ("info"; default debug).
	helperLevelEnv = "DHCP_TEST_SERVE_LEVEL"
	netnsServer    = "10.77.0.1"
)

// TestMain runs the helper server instead of the tests when asked to.
func TestMain(m *testing.M) {
	if iface := os.Getenv(helperEnv); iface != "" {
		os.Exit(serveHelper(iface))
	}
	os.Exit(m.Run())
}

func serveHelper(iface string) int {
	// The garbage collector as attestationd sets it
	// (controlplane/cmd/attestationd), so the benchmark measures what
	// the daemon would do.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	level := slog.LevelDebug
	if os.Getenv("DHCP_TEST_SERVE_QUIET") != "" {
		level = slog.LevelWarn
	}
	if os.Getenv(helperLevelEnv) == "info" {
		level = slog.LevelInfo
	}
	// Written as attestationd writes its log (controlplane/logging).
	out := logging.NewWriter(os.Stderr)
	defer out.Close()
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	opts := Options{Interface: iface, PublicURL: "http://" + netnsServer + ":9000", Logger: log}
	if os.Getenv(helperModeEnv) == string(ModeFull) {
		opts.Mode = ModeFull
		opts.Pool = &Pool{Start: net.ParseIP("10.77.0.100"), End: net.ParseIP("10.77.0.150"), Router: net.ParseIP(netnsServer)}
		if first, last, ok := strings.Cut(os.Getenv(helperPoolEnv), "-"); ok {
			opts.Pool.Start, opts.Pool.End = net.ParseIP(first), net.ParseIP(last)
		}
		if path := os.Getenv(helperDBEnv); path != "" {
			st, err := store.Open(ctx, path)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer st.Close()
			opts.Leases = SQLLeases{DB: st.DB()}
		}
	}
	s, err := New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// DHCP_TEST_SERVE_CPUPROFILE: a CPU profile of the whole run, for
	// looking into the perfdhcp figure.
	if path := os.Getenv("DHCP_TEST_SERVE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// netns is a server namespace and a client namespace joined by a veth
// pair the test creates and removes: the only place its packets go.
type netns struct {
	server, client string
	logs           *syncBuffer
}

// syncBuffer collects the server's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startNetns makes the namespaces and starts the server in one.
func startNetns(t *testing.T, mode Mode) *netns {
	t.Helper()
	testenv.Integration(t, "DHCP across a veth pair between namespaces")
	testenv.Root(t, "creating network namespaces")
	testenv.LookPath(t, "ip", "iproute2")
	id := fmt.Sprintf("%d", os.Getpid())
	n := &netns{server: "dhcps" + id, client: "dhcpc" + id, logs: new(syncBuffer)}
	run(t, "ip", "netns", "add", n.server)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.server).Run() })
	run(t, "ip", "netns", "add", n.client)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.client).Run() })
	run(t, "ip", "-n", n.server, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", n.client)
	run(t, "ip", "-n", n.server, "addr", "add", netnsServer+"/24", "dev", "vs")
	run(t, "ip", "-n", n.server, "link", "set", "vs", "up")
	run(t, "ip", "-n", n.server, "link", "set", "lo", "up")
	run(t, "ip", "-n", n.client, "link", "set", "vc", "up")
	run(t, "ip", "-n", n.client, "link", "set", "lo", "up")

	cmd := exec.Command("ip", "netns", "exec", n.server, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=vs", helperModeEnv+"="+string(mode))
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the server in %s: %v", n.server, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		t.Logf("server log:\n%s", n.logs)
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(n.logs.String(), "dhcp serving") {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not start:\n%s", n.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// udhcpc runs busybox udhcpc in the client namespace with extra
// arguments and returns the variables its script saw when bound (nil:
// no lease).
func (n *netns) udhcpc(t *testing.T, args ...string) map[string]string {
	t.Helper()
	testenv.LookPath(t, "busybox", "busybox")
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nenv > \""+dir+"/$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.client, "busybox", "udhcpc",
		"-f", "-q", "-n", "-i", "vc", "-t", "3", "-T", "1", "-A", "1", "-s", script}, args...)...)
	out, _ := cmd.CombinedOutput()
	t.Logf("udhcpc %s:\n%s", strings.Join(args, " "), out)
	f, err := os.Open(filepath.Join(dir, "bound"))
	if err != nil {
		return nil
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// dhclient runs ISC dhclient once in the client namespace with the
// given config lines and returns its output and the lease it wrote.
func (n *netns) dhclient(t *testing.T, conf string) (out, lease string) {
	t.Helper()
	testenv.LookPath(t, "dhclient", "isc-dhcp-client")
	dir := t.TempDir()
	for name, text := range map[string]string{
		"conf":   "timeout 6;\ninitial-interval 1;\n" + conf,
		"script": "#!/bin/sh\nenv > \"" + dir + "/$reason\"\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := exec.Command("ip", "netns", "exec", n.client, "dhclient", "-d", "-1", "-v",
		"-cf", filepath.Join(dir, "conf"), "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"),
		"-sf", filepath.Join(dir, "script"), "vc").CombinedOutput()
	l, _ := os.ReadFile(filepath.Join(dir, "leases"))
	return string(b), string(l)
}

const wantScript = "http://" + netnsServer + ":9000/boot/ipxe?mac=${net0/mac}&uuid=${uuid}&arch=${buildarch}-${platform}"

func TestNetnsClients(t *testing.T) {
	n := startNetns(t, ModeProxy)
	tests := []struct {
		name   string
		args   []string
		want   map[string]string // nil: no answer
		wantIn string            // in the server's log
	}{
		{name: "pxe bios", args: []string{"-V", "PXEClient:Arch:00000:UNDI:002001"},
			want:   map[string]string{"boot_file": "undionly.kpxe", "vendor": "PXEClient", "siaddr": netnsServer, "serverid": netnsServer},
			wantIn: "arch=bios"},
		{name: "pxe x86-64 uefi", args: []string{"-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"},
			want:   map[string]string{"boot_file": "snponly.efi", "vendor": "PXEClient", "siaddr": netnsServer},
			wantIn: "arch=x86-64-efi"},
		{name: "ipxe user class gets the script", args: []string{"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x4d:69505845"},
			want:   map[string]string{"boot_file": wantScript, "vendor": "PXEClient"},
			wantIn: "ipxe=true"},
		{name: "uefi http boot", args: []string{"-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010"},
			want:   map[string]string{"boot_file": "http://" + netnsServer + ":9000/boot/assets/snponly.efi", "vendor": "HTTPClient"},
			wantIn: "arch=x86-64-efi-http"},
		{name: "not pxe: no answer", args: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := n.udhcpc(t, tt.args...)
			if tt.want == nil {
				if env != nil {
					t.Fatalf("a client that is not PXE got an answer: %v", env)
				}
				return
			}
			if env == nil {
				t.Fatal("no answer")
			}
			if env["ip"] != "0.0.0.0" {
				t.Errorf("got address %q, want 0.0.0.0 (proxy mode hands out none)", env["ip"])
			}
			for k, want := range tt.want {
				if env[k] != want {
					t.Errorf("got %s %q, want %q", k, env[k], want)
				}
			}
			if !strings.Contains(n.logs.String(), tt.wantIn) {
				t.Errorf("the server log lacks %q", tt.wantIn)
			}
		})
	}
	// dhclient is no PXE client: it sees the proxy offer and, finding no
	// address in it, takes no lease; the site's DHCP server gives those.
	t.Run("dhclient pxe: offer without an address", func(t *testing.T) {
		out, lease := n.dhclient(t, "send vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\n")
		if !strings.Contains(out, "DHCPOFFER from "+netnsServer) {
			t.Errorf("dhclient saw no offer from %s:\n%s", netnsServer, out)
		}
		if strings.Contains(lease, "fixed-address") {
			t.Errorf("dhclient got an address from proxy mode:\n%s", lease)
		}
	})
	t.Run("dhclient not pxe: no answer", func(t *testing.T) {
		out, _ := n.dhclient(t, "")
		if strings.Contains(out, "DHCPOFFER from") {
			t.Errorf("a client that is not PXE got an offer:\n%s", out)
		}
	})
}

// TestNetnsFull: in full mode busybox udhcpc gets an address from the
// pool, and a PXE client its boot file with it.
func TestNetnsFull(t *testing.T) {
	n := startNetns(t, ModeFull)
	env := n.udhcpc(t)
	if env == nil || env["ip"] != "10.77.0.100" || env["router"] != netnsServer || env["boot_file"] != "" {
		t.Fatalf("got %v, want ip 10.77.0.100, router %s and no boot file", env, netnsServer)
	}
	env = n.udhcpc(t, "-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007")
	// The same MAC (the veth's) keeps its address.
	if env == nil || env["ip"] != "10.77.0.100" || env["boot_file"] != "snponly.efi" || env["siaddr"] != netnsServer {
		t.Fatalf("got %v, want ip 10.77.0.100 and boot file snponly.efi from %s", env, netnsServer)
	}
}
