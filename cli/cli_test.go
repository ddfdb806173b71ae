package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// result is what one run of the CLI left behind.
type result struct {
	code           int
	stdout, stderr string
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// environ is a fake environment for cli.Run.
type environ map[string]string

func (e environ) get(k string) string { return e[k] }

// runCLI runs the CLI in-process with env as its whole environment.
func runCLI(t *testing.T, env environ, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := cli.Run(ctx, args, strings.NewReader(""), &stdout, &stderr, env.get)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// cliFor returns a runner bound to daemon d through the environment, that
// fails the test unless the command succeeds.
func cliFor(t *testing.T, d *daemontest.Daemon) (ok func(args ...string) string, raw func(args ...string) result) {
	env := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}
	raw = func(args ...string) result {
		t.Helper()
		return runCLI(t, env, args...)
	}
	ok = func(args ...string) string {
		t.Helper()
		r := runCLI(t, env, args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("attestation %s: got exit %d, stderr %q; want 0 and no stderr", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	return ok, raw
}

// fingerprint returns a valid, distinct EK fingerprint for seed.
func fingerprint(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])
}

type machineJSON struct {
	ID            string   `json:"id"`
	EKFingerprint string   `json:"ek_fingerprint"`
	State         string   `json:"state"`
	Role          string   `json:"role"`
	Hostname      string   `json:"hostname"`
	MACs          []string `json:"macs"`
	Reason        string   `json:"decommission_reason"`
}

type eventJSON struct {
	Seq       string         `json:"seq"` // int64 is a string in protojson
	Type      string         `json:"type"`
	MachineID string         `json:"machine_id"`
	Payload   map[string]any `json:"payload"`
}

func decode[T any](t *testing.T, what, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: output is not the expected JSON: %v\n%s", what, err, s)
	}
	return v
}

func register(t *testing.T, ok func(...string) string, seed string, extra ...string) machineJSON {
	t.Helper()
	args := append([]string{"-o", "json", "machines", "register", "--ek-fingerprint", fingerprint(seed)}, extra...)
	return decode[machineJSON](t, "register", ok(args...))
}

func TestMachineLifecycle(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, raw := cliFor(t, d)

	fp := fingerprint("lifecycle")
	m := register(t, ok, "lifecycle", "--mac", "52:54:00:12:34:56", "--mac", "52-54-00-AB-CD-EF", "--hostname", "node-1")
	if m.ID == "" || m.State != "registered" || m.EKFingerprint != fp {
		t.Fatalf("register: got %+v, want a registered machine with EK %s", m, fp)
	}
	if want := []string{"52:54:00:12:34:56", "52:54:00:ab:cd:ef"}; strings.Join(m.MACs, " ") != strings.Join(want, " ") {
		t.Errorf("register: got MACs %v, want %v", m.MACs, want)
	}

	t.Run("list table", func(t *testing.T) {
		out := ok("machines", "list")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want a header and one machine:\n%s", len(lines), out)
		}
		for _, col := range []string{"ID", "STATE", "ROLE", "HOSTNAME", "EK FINGERPRINT", "MACS", "REGISTERED"} {
			if !strings.Contains(lines[0], col) {
				t.Errorf("header %q: missing column %s", lines[0], col)
			}
		}
		for _, cell := range []string{m.ID, "registered", "node-1", fp[:16] + "…", "52:54:00:12:34:56,52:54:00:ab:cd:ef"} {
			if !strings.Contains(lines[1], cell) {
				t.Errorf("row %q: missing %q", lines[1], cell)
			}
		}
		if strings.Contains(lines[1], fp) {
			t.Errorf("row %q: got the whole fingerprint, want it shortened", lines[1])
		}
	})

	t.Run("list json", func(t *testing.T) {
		out := ok("machines", "list", "-o", "json")
		got := decode[[]machineJSON](t, "list -o json", out)
		if len(got) != 1 || got[0].ID != m.ID {
			t.Fatalf("got %+v, want one machine %s", got, m.ID)
		}
		if again := ok("machines", "list", "-o", "json"); again != out {
			t.Errorf("JSON output is not stable:\n%s\n%s", out, again)
		}
	})

	t.Run("list yaml", func(t *testing.T) {
		var got []machineJSON
		out := ok("-o", "yaml", "machines", "list")
		if err := yaml.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, out)
		}
		if len(got) != 1 || got[0].ID != m.ID || got[0].EKFingerprint != fp {
			t.Fatalf("got %+v, want one machine %s", got, m.ID)
		}
	})

	t.Run("show", func(t *testing.T) {
		out := ok("machines", "show", m.ID)
		for _, want := range []string{"ID:", m.ID, "State:", "registered", "EK fingerprint:", fp, "Hostname:", "node-1", "Pre-registered:", "yes", "TPM:", "unknown (not booted yet)"} {
			if !strings.Contains(out, want) {
				t.Errorf("show: missing %q in\n%s", want, out)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, _, found := strings.Cut(line, ":"); !found || k == "" {
				t.Errorf("show: line %q is not key: value", line)
			}
		}
	})

	t.Run("set-role", func(t *testing.T) {
		got := decode[machineJSON](t, "set-role", ok("machines", "set-role", m.ID, "worker", "-o", "json"))
		if got.Role != "worker" || got.State != "registered" {
			t.Errorf("got role %q state %q, want worker registered", got.Role, got.State)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		got := decode[machineJSON](t, "revoke", ok("machines", "revoke", m.ID, "--reason", "disk replaced", "-o", "json"))
		if got.State != "decommissioned" || got.Reason != "disk replaced" {
			t.Errorf("got state %q reason %q, want decommissioned, disk replaced", got.State, got.Reason)
		}
	})

	t.Run("list by state", func(t *testing.T) {
		tests := []struct {
			name, state string
			want        int
		}{
			{"decommissioned", "decommissioned", 1},
			{"registered", "registered", 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := decode[[]machineJSON](t, "list", ok("machines", "list", "--state", tt.state, "-o", "json"))
				if len(got) != tt.want {
					t.Errorf("got %d machines, want %d", len(got), tt.want)
				}
			})
		}
		r := raw("machines", "list", "--state", "attested")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ID ") || strings.Count(r.stdout, "\n") != 1 || r.stderr != "no machines\n" {
			t.Errorf("table of no machines: got exit %d, stdout %q, stderr %q; want the header alone and \"no machines\" on stderr", r.code, r.stdout, r.stderr)
		}
		if out := ok("machines", "list", "--state", "attested", "-o", "json"); out != "[]\n" {
			t.Errorf("JSON of no machines: got %q, want []", out)
		}
	})

	t.Run("reinstate", func(t *testing.T) {
		out := ok("machines", "reinstate", m.ID)
		if !strings.Contains(out, "registered") || !strings.Contains(out, m.ID) {
			t.Errorf("reinstate: got\n%s\nwant the machine, registered", out)
		}
	})

	wantTypes := []string{"node.registered", "node.role_changed", "node.decommissioned", "node.registered"}

	t.Run("events list json", func(t *testing.T) {
		evs := decode[[]eventJSON](t, "events list", ok("events", "list", "-o", "json"))
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Type)
			if ev.MachineID != m.ID {
				t.Errorf("event %s: got machine %q, want %s", ev.Seq, ev.MachineID, m.ID)
			}
		}
		if strings.Join(got, " ") != strings.Join(wantTypes, " ") {
			t.Errorf("got events %v, want %v", got, wantTypes)
		}
	})

	t.Run("events list table", func(t *testing.T) {
		out := ok("events", "list", "--machine", m.ID)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1+len(wantTypes) {
			t.Fatalf("got %d lines, want a header and %d events:\n%s", len(lines), len(wantTypes), out)
		}
		for _, col := range []string{"SEQ", "TIME", "TYPE", "MACHINE", "DETAILS"} {
			if !strings.Contains(lines[0], col) {
				t.Errorf("header %q: missing column %s", lines[0], col)
			}
		}
		for i, typ := range wantTypes {
			if !strings.Contains(lines[i+1], typ) {
				t.Errorf("line %d %q: want %s", i+1, lines[i+1], typ)
			}
		}
		if !strings.Contains(lines[2], "new_role=worker") {
			t.Errorf("role change %q: want new_role=worker in its details", lines[2])
		}
		if !strings.Contains(lines[3], `reason="disk replaced"`) {
			t.Errorf("decommission %q: want its reason in its details", lines[3])
		}
	})

	t.Run("events list filters", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want []string
		}{
			{"type", []string{"--type", "node.registered"}, []string{"node.registered", "node.registered"}},
			{"limit", []string{"--limit", "2"}, wantTypes[:2]},
			{"since", []string{"--since", "2"}, wantTypes[2:]},
			{"machine and type", []string{"--machine", m.ID, "--type", "node.decommissioned"}, []string{"node.decommissioned"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				evs := decode[[]eventJSON](t, "events list", ok(append([]string{"events", "list", "-o", "json"}, tt.args...)...))
				var got []string
				for _, ev := range evs {
					got = append(got, ev.Type)
				}
				if strings.Join(got, " ") != strings.Join(tt.want, " ") {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			})
		}
	})
}

func TestMachinesListFollowsPages(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, _ := cliFor(t, d)
	var want []string
	for i := range 5 {
		want = append(want, register(t, ok, "page-"+string(rune('a'+i))).ID)
	}
	got := decode[[]machineJSON](t, "list", ok("machines", "list", "--page-size", "2", "-o", "json"))
	var ids []string
	for _, m := range got {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want all five in registration order %v", ids, want)
	}
}

// startWatch starts `attestation events watch ARGS` and returns its output
// and a stop function that interrupts it and returns its exit code.
func startWatch(t *testing.T, env environ, args ...string) (stdout, stderr *syncBuffer, stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, append([]string{"events", "watch"}, args...), strings.NewReader(""), stdout, stderr, env.get)
	}()
	t.Cleanup(cancel)
	return stdout, stderr, func() int {
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatal("events watch did not end within 10s of being interrupted")
			return -1
		}
	}
}

func TestEventsWatch(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, _ := cliFor(t, d)
	env := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}
	before := register(t, ok, "before-watch")

	t.Run("new events", func(t *testing.T) {
		stdout, stderr, stop := startWatch(t, env)
		// The watch only sends events committed after it is established,
		// which the test cannot observe: register until one shows up.
		var seen machineJSON
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; seen.ID == "" && time.Now().Before(deadline); i++ {
			m := register(t, ok, "during-watch-"+string(rune('a'+i%26))+time.Now().String())
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if strings.Contains(stdout.String(), m.ID) {
					seen = m
					break
				}
			}
		}
		if code := stop(); code != 0 {
			t.Errorf("interrupted watch: got exit %d, want 0 (stderr %q)", code, stderr.String())
		}
		if seen.ID == "" {
			t.Fatalf("no event arrived within 15s; output:\n%s", stdout.String())
		}
		if stderr.String() != "" {
			t.Errorf("got stderr %q, want none", stderr.String())
		}
		if strings.Contains(stdout.String(), before.ID) {
			t.Errorf("got an event from before the watch started:\n%s", stdout.String())
		}
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			if !strings.Contains(line, "node.registered") {
				t.Errorf("line %q: want one node.registered event per line", line)
			}
		}
	})

	t.Run("replay since", func(t *testing.T) {
		stdout, stderr, stop := startWatch(t, env, "--since", "0", "--machine", before.ID, "-o", "json")
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(stdout.String(), "\n") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		ok("machines", "revoke", before.ID, "--reason", "watched")
		for strings.Count(stdout.String(), "\n") < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if code := stop(); code != 0 {
			t.Errorf("interrupted watch: got exit %d, want 0 (stderr %q)", code, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var got []string
		for _, line := range lines {
			got = append(got, decode[eventJSON](t, "watch -o json line", line).Type)
		}
		if want := []string{"node.registered", "node.decommissioned"}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

// A watch outlives a daemon restart: it says so on stderr, reconnects by
// itself and resumes after the last event it printed, printing none twice.
func TestEventsWatchReconnects(t *testing.T) {
	dir := t.TempDir()
	d := daemontest.Start(t, daemontest.Options{DataDir: dir})
	ok, _ := cliFor(t, d)
	env := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}
	before := register(t, ok, "before-restart")

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 20s for %s", what)
			}
		}
	}
	// One watch replays the log from the start; the other starts from
	// now and sees nothing before the restart.
	replay, replayErr, stopReplay := startWatch(t, env, "-o", "json", "--since", "0")
	quiet, quietErr, stopQuiet := startWatch(t, env, "-o", "json")
	waitFor("the replayed event", func() bool { return strings.Contains(replay.String(), before.ID) })
	time.Sleep(300 * time.Millisecond) // let the quiet watch connect

	d.Stop(t)
	waitFor("the watches to say the stream was lost", func() bool {
		return strings.Contains(replayErr.String(), "reconnecting") && strings.Contains(quietErr.String(), "reconnecting")
	})
	d = daemontest.Start(t, daemontest.Options{DataDir: dir, Config: func(c *config.Config) { c.Listen = d.Addr.String() }})
	after := register(t, ok, "after-restart")
	waitFor("the event after the restart", func() bool {
		return strings.Contains(replay.String(), after.ID) && strings.Contains(quiet.String(), after.ID)
	})
	codeReplay, codeQuiet := stopReplay(), stopQuiet()
	if codeReplay != 0 || codeQuiet != 0 {
		t.Errorf("interrupted watches: got exits %d and %d, want 0", codeReplay, codeQuiet)
	}
	if got := strings.Count(replay.String(), `{"seq":`); got != 2 {
		t.Errorf("the replaying watch printed %d events, want the one before the restart and the one after, once each:\n%s", got, replay.String())
	}
	if strings.Contains(quiet.String(), before.ID) || strings.Count(quiet.String(), "\n") != 1 {
		t.Errorf("the watch from now on: got\n%s\nwant the one event after the restart", quiet.String())
	}
	for _, stderr := range []string{replayErr.String(), quietErr.String()} {
		for _, want := range []string{"reconnecting in 500ms, resuming after event", "reconnected to the event stream"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr %q: want %q", stderr, want)
			}
		}
	}
}

func TestExtensionsListEmpty(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	_, raw := cliFor(t, d)
	tests := []struct {
		name           string
		args           []string
		stdout, stderr string
	}{
		{"table", nil, "NAME  VERSION  STATUS  DESCRIPTION\n", "no extensions compiled into the daemon\n"},
		{"json", []string{"-o", "json"}, "{}\n", ""},
		{"yaml", []string{"-o", "yaml"}, "{}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := raw(append([]string{"extensions", "list"}, tt.args...)...)
			if r.code != 0 || r.stdout != tt.stdout || r.stderr != tt.stderr {
				t.Errorf("got exit %d, stdout %q, stderr %q; want 0, %q, %q", r.code, r.stdout, r.stderr, tt.stdout, tt.stderr)
			}
		})
	}
}

// approve defaults to the role and hostname a machine has; revoking a
// decommissioned machine says it already is.
func TestApproveDefaultsAndRevokeTwice(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, raw := cliFor(t, d)
	pre := attested(t, d, ok, "approve-defaults", "--role", "storage")
	r := raw("machines", "approve", pre.ID)
	if r.code != 1 || !strings.Contains(r.stderr, "hostname is required: the machine has none yet") {
		t.Fatalf("approve without a hostname anywhere: exit %d, stderr %q", r.code, r.stderr)
	}
	got := decode[machineJSON](t, "approve", ok("machines", "approve", pre.ID, "--hostname", "stor-1", "-o", "json"))
	if got.State != "provisioned" || got.Role != "storage" || got.Hostname != "stor-1" {
		t.Errorf("approve with its role: got %+v, want provisioned storage stor-1", got)
	}
	ok("machines", "revoke", pre.ID, "--reason", "moved racks")
	r = raw("machines", "revoke", pre.ID, "--reason", "again")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot revoke: machine is already decommissioned") || !strings.Contains(r.stderr, "(moved racks)") || strings.Contains(r.stderr, "reinstate it first") {
		t.Errorf("revoke twice: exit %d, stderr %q; want it to say the machine already is, since when and why", r.code, r.stderr)
	}
}

func TestApproveAttested(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, _ := cliFor(t, d)
	m := attested(t, d, ok, "to-approve")

	got := decode[machineJSON](t, "approve", ok("machines", "approve", m.ID, "--role", "worker", "--hostname", "node-7", "-o", "json"))
	if got.State != "provisioned" || got.Role != "worker" || got.Hostname != "node-7" {
		t.Errorf("got %+v, want provisioned worker node-7", got)
	}
}

// closedURL returns the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

func TestErrors(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, _ := cliFor(t, d)
	m := register(t, ok, "errors")
	down := closedURL(t)
	good := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}

	tests := []struct {
		name string
		env  environ
		args []string
		// want are substrings of the first stderr line.
		want []string
		// notWant must not appear on stderr.
		notWant []string
		// usage: a second line points at the command's help.
		usage bool
	}{
		{
			name: "approve registered machine",
			args: []string{"machines", "approve", m.ID, "--role", "worker", "--hostname", "node-1"},
			want: []string{"cannot approve", "registered"},
		},
		{
			name:    "bad fingerprint",
			args:    []string{"machines", "register", "--ek-fingerprint", "not-hex"},
			want:    []string{`--ek-fingerprint: "not-hex" is not an EK fingerprint: want 64 hex digits`},
			notWant: []string{"validation error"},
		},
		{
			name:    "two bad fields",
			args:    []string{"machines", "register", "--ek-fingerprint", "abc", "--role", "Bad Role"},
			want:    []string{`--ek-fingerprint: "abc" is not an EK fingerprint: want 64 hex digits`, `; --role: "Bad Role" is not a role: want lower-case letters`},
			notWant: []string{"validation error"},
		},
		{
			name: "malformed ID",
			args: []string{"machines", "show", "node-1"},
			want: []string{`ID: "node-1" is not a machine ID: want a UUID such as`},
		},
		{
			name:    "approve with a bad role",
			args:    []string{"machines", "approve", m.ID, "--role", "Worker"},
			want:    []string{`--role: "Worker" is not a role: want lower-case letters`},
			notWant: []string{"is required"},
		},
		{
			name: "list a bad state",
			args: []string{"machines", "list", "--state", "bogus"},
			want: []string{`--state: "bogus" is not a state: want registered, attested, provisioned or decommissioned`},
		},
		{
			name:    "watch a bad machine ID",
			args:    []string{"events", "watch", "--machine", "nope"},
			want:    []string{`--machine: "nope" is not a machine ID: want a UUID such as`},
			notWant: []string{"[0-9a-fA-F]"},
		},
		{
			name: "list events of a bad type",
			args: []string{"events", "list", "--type", "node.bogus"},
			want: []string{`--type: "node.bogus" is not an event type: want one of node.registered, `},
		},
		{
			name: "register a bad MAC",
			args: []string{"machines", "register", "--ek-fingerprint", fingerprint("bad-mac"), "--mac", "52:54:00:12:34:56", "--mac", "zz:00"},
			want: []string{`--mac: "zz:00" is not a MAC address: want six hex pairs like 52:54:00:12:34:56`},
		},
		{
			name: "unknown ID",
			args: []string{"machines", "show", "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a"},
			want: []string{"not found"},
		},
		{
			name: "already registered",
			args: []string{"machines", "register", "--ek-fingerprint", fingerprint("errors")},
			want: []string{"already exists", m.ID},
		},
		{
			name: "reinstate registered machine",
			args: []string{"machines", "reinstate", m.ID},
			want: []string{"cannot reinstate", "not decommissioned"},
		},
		{
			name: "no token",
			env:  environ{cli.EnvURL: d.URL},
			args: []string{"machines", "list"},
			want: []string{"requires a token", "--token", "ATTESTATION_TOKEN", "DATA_DIR/admin-token"},
		},
		{
			name: "wrong token",
			env:  environ{cli.EnvURL: d.URL, cli.EnvToken: "wrong"},
			args: []string{"events", "list"},
			want: []string{"did not accept the token", "ATTESTATION_TOKEN"},
		},
		{
			name: "no token watching",
			env:  environ{cli.EnvURL: d.URL},
			args: []string{"events", "watch"},
			want: []string{"requires a token", "ATTESTATION_TOKEN"},
		},
		{
			name: "connection refused",
			env:  environ{cli.EnvURL: down, cli.EnvToken: daemontest.Token},
			args: []string{"machines", "list"},
			want: []string{"cannot reach the daemon at " + down + ": connection refused", "ATTESTATION_API_URL"},
		},
		{
			name: "connection refused watching",
			env:  environ{cli.EnvURL: down, cli.EnvToken: daemontest.Token},
			args: []string{"events", "watch"},
			want: []string{"cannot reach the daemon at " + down + ": connection refused"},
		},
		{
			name:  "missing argument",
			args:  []string{"machines", "show"},
			want:  []string{"attestation machines show: missing argument ID"},
			usage: true,
		},
		{
			name:  "missing second argument",
			args:  []string{"machines", "set-role", m.ID},
			want:  []string{"missing argument ROLE"},
			usage: true,
		},
		{
			name:  "extra argument",
			args:  []string{"machines", "list", "extra"},
			want:  []string{`unexpected arguments "extra"`},
			usage: true,
		},
		{
			name:  "missing required flag",
			args:  []string{"machines", "revoke", m.ID},
			want:  []string{`required flag(s) "reason" not set`},
			usage: true,
		},
		{
			name:  "unknown flag",
			args:  []string{"machines", "list", "--colour"},
			want:  []string{"unknown flag: --colour"},
			usage: true,
		},
		{
			name:  "unknown output format",
			args:  []string{"machines", "list", "-o", "xml"},
			want:  []string{`--output "xml"`},
			usage: true,
		},
		{
			name:  "bad URL",
			args:  []string{"machines", "list", "--url", "localhost:9000"},
			want:  []string{`--url "localhost:9000" is not an http:// or https:// URL`},
			usage: true,
		},
		{
			name:  "unknown command",
			args:  []string{"machine", "frobnicate"},
			want:  []string{`unknown command "frobnicate"`},
			usage: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = good
			}
			r := runCLI(t, env, tt.args...)
			if r.code != 1 {
				t.Errorf("got exit %d, want 1", r.code)
			}
			if r.stdout != "" {
				t.Errorf("got stdout %q, want none", r.stdout)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			wantLines := 1
			if tt.usage {
				wantLines = 2
			}
			if len(lines) != wantLines {
				t.Fatalf("got %d stderr lines, want %d:\n%s", len(lines), wantLines, r.stderr)
			}
			if !strings.HasPrefix(lines[0], "attestation: ") {
				t.Errorf("got %q, want it to start with %q", lines[0], "attestation: ")
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("got %q, want it to contain %q", lines[0], w)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(r.stderr, nw) {
					t.Errorf("got %q, want no %q", r.stderr, nw)
				}
			}
			if tt.usage && !strings.Contains(lines[1], "--help") {
				t.Errorf("got %q, want a pointer to --help", lines[1])
			}
		})
	}
}

func TestSettingsPrecedence(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	down := closedURL(t)
	tests := []struct {
		name string
		env  environ
		args []string
		// wantErr is a substring of the error; "" means success.
		wantErr string
	}{
		{"env only", environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}, nil, ""},
		{"flags only", nil, []string{"--url", d.URL, "--token", daemontest.Token}, ""},
		{"url flag beats env", environ{cli.EnvURL: down, cli.EnvToken: daemontest.Token}, []string{"--url", d.URL}, ""},
		{"url env is used", environ{cli.EnvURL: down, cli.EnvToken: daemontest.Token}, nil, down},
		{"token flag beats env", environ{cli.EnvURL: d.URL, cli.EnvToken: "wrong"}, []string{"--token", daemontest.Token}, ""},
		{"token env is used", environ{cli.EnvURL: d.URL, cli.EnvToken: "wrong"}, nil, "did not accept the token"},
		{"bad token flag beats good env", environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}, []string{"--token", "wrong"}, "did not accept the token"},
		{"default url", environ{cli.EnvToken: "x"}, nil, cli.DefaultURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.env, append([]string{"extensions", "list"}, tt.args...)...)
			switch {
			case tt.wantErr == "" && r.code != 0:
				t.Errorf("got exit %d (%s), want success", r.code, strings.TrimSpace(r.stderr))
			case tt.wantErr != "" && (r.code != 1 || !strings.Contains(r.stderr, tt.wantErr)):
				t.Errorf("got exit %d, stderr %q; want exit 1 mentioning %q", r.code, r.stderr, tt.wantErr)
			}
		})
	}
}

func TestRootCommand(t *testing.T) {
	root := cli.NewRootCommand()
	for _, path := range [][]string{
		{"machines", "list"}, {"machines", "show"}, {"machines", "register"}, {"machines", "approve"},
		{"machines", "revoke"}, {"machines", "set-role"}, {"machines", "reinstate"},
		{"events", "list"}, {"events", "watch"}, {"extensions", "list"},
		{"configs", "set"}, {"configs", "get"}, {"configs", "list"},
	} {
		cmd, _, err := root.Find(path)
		if err != nil || cmd.Name() != path[len(path)-1] {
			t.Errorf("%v: got %v, %v; want the command", path, cmd, err)
			continue
		}
		if cmd.Short == "" || cmd.Example == "" {
			t.Errorf("%s: want a Short and an Example", cmd.CommandPath())
		}
	}
	for _, flag := range []string{"url", "token", "output"} {
		if root.PersistentFlags().Lookup(flag) == nil {
			t.Errorf("missing global flag --%s", flag)
		}
	}

	r := runCLI(t, nil, "completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "attestation") {
		t.Errorf("completion bash: got exit %d, %d bytes; want a script", r.code, len(r.stdout))
	}
}
