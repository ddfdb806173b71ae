//go:build cgo

package agent_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/attestation/attestation/agent"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// These tests run the agent against a real attestationd (daemontest) with
// the in-process TPM simulator: the whole protocol, through the daemon's
// front door, with nothing faked.

// settings adjusts the daemon's config by its file keys, so that the test
// names settings (ek_policy, ...) the way an operator writes them: kv is
// loaded as a config file would be, and the settings it names are copied
// over c's.
func settings(t *testing.T, kv map[string]any) func(*config.Config) {
	return func(c *config.Config) {
		b, err := yaml.Marshal(kv)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "attestationd.yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
		config.AddFlags(fs)
		if err := fs.Parse([]string{"--" + config.ConfigFlag, path}); err != nil {
			t.Fatal(err)
		}
		loaded, err := config.Load(fs, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		to, from := reflect.ValueOf(c).Elem(), reflect.ValueOf(&loaded).Elem()
		copied := 0
		for i := range to.NumField() {
			key, _, _ := strings.Cut(to.Type().Field(i).Tag.Get("yaml"), ",")
			if _, ok := kv[key]; ok {
				to.Field(i).Set(from.Field(i))
				copied++
			}
		}
		if copied != len(kv) {
			t.Fatalf("settings: %d of the keys %v are config fields", copied, kv)
		}
	}
}

// startDaemon starts a daemon that accepts the simulator's EK (it has no
// EK certificate).
func startDaemon(t *testing.T, o daemontest.Options, kv map[string]any) *daemontest.Daemon {
	t.Helper()
	all := map[string]any{"ek_policy": "any", "heartbeat_interval": "2s"}
	for k, v := range kv {
		all[k] = v
	}
	o.Config = settings(t, all)
	return daemontest.Start(t, o)
}

// runAgent starts agent.Run with test timings and returns its result.
func runAgent(t *testing.T, ctx context.Context, cfg agent.Config) <-chan error {
	t.Helper()
	if cfg.TPM == "" {
		cfg.TPM = "simulator"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	cfg.Retry = agent.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	cfg.SlowRetry = agent.Backoff{Min: 200 * time.Millisecond, Max: time.Second}
	cfg.EventLog = filepath.Join(t.TempDir(), "no-event-log")
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg) }()
	return done
}

func operator[T any](req *T) *connect.Request[T] {
	r := connect.NewRequest(req)
	r.Header().Set("Authorization", "Bearer "+daemontest.Token)
	return r
}

func machines(d *daemontest.Daemon) attestationv1connect.MachineServiceClient {
	return attestationv1connect.NewMachineServiceClient(d.Client, d.URL)
}

func approve(t *testing.T, d *daemontest.Daemon, id, hostname string) {
	t.Helper()
	_, err := machines(d).ApproveMachine(context.Background(), operator(&attestationv1.ApproveMachineRequest{
		Id: id, Role: "worker", Hostname: hostname,
	}))
	if err != nil {
		t.Fatalf("approve machine %s: %v", id, err)
	}
}

func getMachine(t *testing.T, d *daemontest.Daemon, id string) *attestationv1.Machine {
	t.Helper()
	res, err := machines(d).GetMachine(context.Background(), operator(&attestationv1.GetMachineRequest{Id: id}))
	if err != nil {
		t.Fatalf("get machine %s: %v", id, err)
	}
	return res.Msg.GetMachine()
}

func stop(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent.Run after cancel = %v, want nil once configured", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent.Run did not return within 30s of cancel")
	}
}

func TestEndToEnd(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	l := newLogs(t)
	out := filepath.Join(t.TempDir(), "run", "attestation", "config")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, ConfigOut: out, Logger: l.logger()})

	for _, step := range []string{"tpm opened", "ek read", "registered", "credential activated", "quote sent", "attested"} {
		l.wait(step, 1, time.Minute)
	}
	waiting := l.wait("waiting for approval", 1, time.Minute)
	id := waiting["machine"]
	if m := getMachine(t, d, id); m.GetState() != "attested" || !m.GetTpmAvailable() {
		t.Fatalf("before approval the machine is %q (tpm_available %v), want attested with a TPM", m.GetState(), m.GetTpmAvailable())
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a config was written before approval")
	}

	approve(t, d, id, "node-1.lab.example")
	approved := l.wait("approved", 1, 30*time.Second)
	configURL := l.wait("config URL", 1, 30*time.Second)["config_url"]
	written := l.wait("config written", 1, 30*time.Second)
	if written["path"] != out {
		t.Errorf("config written to %q, want %q", written["path"], out)
	}
	body, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "node-1.lab.example") || fmt.Sprint(len(body)) != written["bytes"] {
		t.Errorf("config (%s bytes logged) = %q, want the machine's config naming its hostname", written["bytes"], body)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", fi.Mode().Perm())
	}

	// The URL was spent by the agent's single fetch.
	// The URL is a bearer secret: only the debug line shows it.
	token := configURL[strings.LastIndexByte(configURL, '/')+1:]
	if !strings.HasSuffix(approved["config_url"], "/config/REDACTED") {
		t.Errorf("approved logs config_url %q, want it redacted", approved["config_url"])
	}
	for _, rec := range l.all() {
		if rec["level"] != "DEBUG" && strings.Contains(fmt.Sprint(rec), token) {
			t.Errorf("a %s log line carries the config token: %v", rec["level"], rec)
		}
	}
	res, err := http.Get(configURL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusGone {
		t.Errorf("second GET of the config URL: %s, want 410 Gone", res.Status)
	}

	l.wait("heartbeat", 2, 30*time.Second)
	m := getMachine(t, d, id)
	if m.GetState() != "provisioned" || m.GetHostname() != "node-1.lab.example" || m.GetLastHeartbeatAt() == nil {
		t.Errorf("after heartbeats the machine is %q %q (last heartbeat %v), want provisioned node-1.lab.example with a heartbeat",
			m.GetState(), m.GetHostname(), m.GetLastHeartbeatAt())
	}
	stop(t, cancel, done)
	if n := l.count("config written"); n != 1 {
		t.Errorf("config written %d times, want once", n)
	}
}

func TestEndToEndOnce(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	l := enrollOnce(t, context.Background(), d, agent.Config{}, "once", time.Minute)
	if n := l.count("heartbeat"); n != 0 {
		t.Errorf("%d heartbeats with Once, want none", n)
	}
}

// enrollOnce runs the agent with Once (against d unless cfg names a
// server), approves the machine as hostname once it waits, and fails the
// test unless the agent then returns nil within the given time, its config
// written. It returns the agent's log.
func enrollOnce(t *testing.T, ctx context.Context, d *daemontest.Daemon, cfg agent.Config, hostname string, within time.Duration) *logs {
	t.Helper()
	l := newLogs(t)
	if cfg.Server == "" {
		cfg.Server = d.URL
	}
	cfg.ConfigOut = filepath.Join(t.TempDir(), "config")
	cfg.Once, cfg.Logger = true, l.logger()
	done := runAgent(t, ctx, cfg)
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	approve(t, d, id, hostname)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent.Run with Once = %v, want nil after writing the config", err)
		}
	case <-time.After(within):
		t.Fatalf("agent.Run with Once did not return within %v of approval", within)
	}
	if _, err := os.Stat(cfg.ConfigOut); err != nil {
		t.Fatalf("config not written: %v", err)
	}
	return l
}

// A machine pre-registered with a role and hostname is approved as it
// attests, and Attest answers with its config URL: the agent fetches its
// config at once, without watching for approval.
func TestEndToEndPreRegistered(t *testing.T) {
	// The seeded simulator's EK, read by a first run against a daemon of
	// its own.
	first := startDaemon(t, daemontest.Options{}, nil)
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := runAgent(t, ctx, agent.Config{Server: first.URL, TPM: "simulator:43", ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})
	fp := l.wait("ek read", 1, time.Minute)["fingerprint"]
	cancel()
	<-done

	d := startDaemon(t, daemontest.Options{}, nil)
	if _, err := machines(d).RegisterMachine(context.Background(), operator(&attestationv1.RegisterMachineRequest{
		EkFingerprint: fp, Role: "worker", Hostname: "pre-1",
	})); err != nil {
		t.Fatal(err)
	}
	var watches atomic.Int32
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == attestationv1connect.AgentServiceWatchApprovalProcedure {
			watches.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	l = newLogs(t)
	out := filepath.Join(t.TempDir(), "config")
	if err := <-runAgent(t, context.Background(), agent.Config{
		Server: d.URL, TPM: "simulator:43", ConfigOut: out, Once: true, HTTPClient: client, Logger: l.logger(),
	}); err != nil {
		t.Fatalf("agent.Run with Once = %v, want nil after writing the config", err)
	}
	l.wait("approved as attested", 1, time.Second)
	if body, err := os.ReadFile(out); err != nil || !strings.Contains(string(body), "hostname: pre-1") {
		t.Errorf("config %q (%v), want the default config naming pre-1", body, err)
	}
	if n := watches.Load(); n != 0 {
		t.Errorf("the agent called WatchApproval %d times, want none", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The agent reads the approval stream to its end, which the daemon sends
// right after the config URL, so the config fetch goes over the same
// connection: one dial for the whole enrollment. (Closing the stream
// before its end made the transport drop the connection.)
func TestEndToEndOneConnection(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	var dials atomic.Int32
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	// No heartbeat falls due during the test: each would need a
	// connection of its own while the stream holds the first.
	enrollOnce(t, context.Background(), d, agent.Config{HeartbeatInterval: time.Hour, HTTPClient: client}, "one-connection", time.Minute)
	if n := dials.Load(); n != 1 {
		t.Errorf("the enrollment dialed the control plane %d times, want 1", n)
	}
}

// A control plane that keeps the approval stream open after the config
// URL (here a proxy that holds back the stream's end) does not keep the
// agent from its config.
func TestEndToEndStreamKeptOpen(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	upstream, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/WatchApproval") {
			proxy.ServeHTTP(w, r)
			return
		}
		holdStreamEnd(t, w, r, upstream)
	}))
	t.Cleanup(front.Close)
	// Stopped before front closes, which waits for the held stream.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Without the bound, the agent would wait for the stream's end
	// until the test stopped it.
	enrollOnce(t, ctx, d, agent.Config{Server: front.URL, HeartbeatInterval: time.Hour}, "kept-open", 30*time.Second)
}

// holdStreamEnd forwards a Connect server stream from upstream, every
// message but the end-of-stream one, and then holds the response open
// until the client goes away.
func holdStreamEnd(t *testing.T, w http.ResponseWriter, r *http.Request, upstream *url.URL) {
	req := r.Clone(r.Context())
	req.RequestURI = ""
	req.URL.Scheme, req.URL.Host = upstream.Scheme, upstream.Host
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Errorf("proxy WatchApproval: %v", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.(http.Flusher).Flush()
	for {
		var prefix [5]byte // flags, then the message length
		if _, err := io.ReadFull(resp.Body, prefix[:]); err != nil {
			break
		}
		msg := make([]byte, binary.BigEndian.Uint32(prefix[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			break
		}
		if prefix[0]&0x02 != 0 { // the end of the stream: held back
			break
		}
		w.Write(prefix[:])
		w.Write(msg)
		w.(http.Flusher).Flush()
	}
	<-r.Context().Done()
}

// The daemon restarts while the agent waits for approval: the agent
// reconnects by itself and still gets its config.
func TestEndToEndDaemonRestart(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, daemontest.Options{DataDir: dir}, nil)
	addr := d.Addr.String()
	l := newLogs(t)
	out := filepath.Join(t.TempDir(), "config")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, ConfigOut: out, Logger: l.logger()})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]

	d.Stop(t)
	l.wait("approval stream lost", 1, 30*time.Second)
	d2 := startDaemon(t, daemontest.Options{DataDir: dir}, map[string]any{"listen": addr})
	l.wait("waiting for approval", 2, 30*time.Second)

	approve(t, d2, id, "after-restart")
	l.wait("config written", 1, 30*time.Second)
	l.wait("heartbeat", 1, 30*time.Second)
	stop(t, cancel, done)
}

// A decommissioned machine is refused clearly and retried slowly, and
// goes on by itself once an operator reinstates it.
func TestEndToEndDecommissioned(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	l := newLogs(t)
	out := filepath.Join(t.TempDir(), "config")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, TPM: "simulator:42", ConfigOut: out, Logger: l.logger()})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]

	if _, err := machines(d).RevokeMachine(ctx, operator(&attestationv1.RevokeMachineRequest{Id: id, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	// The daemon ends the machine's session with the decommission: the
	// agent finds out from the stream (decommissioned, or its session
	// rejected) and registers again, which is refused.
	refused := l.wait("registration failed: refused by the control plane", 1, 30*time.Second)
	if refused["code"] != connect.CodeFailedPrecondition.String() || !strings.Contains(refused["err"], "decommissioned") {
		t.Errorf("refusal logged as code %q err %q, want failed_precondition naming the decommission", refused["code"], refused["err"])
	}
	if _, err := machines(d).ReinstateMachine(ctx, operator(&attestationv1.ReinstateMachineRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	l.wait("attested", 2, 30*time.Second)
	got := l.wait("waiting for approval", 2, 30*time.Second)["machine"]
	if got != id {
		t.Errorf("after reinstatement the agent is machine %s, want the same machine %s", got, id)
	}
	approve(t, d, id, "reinstated")
	l.wait("config written", 1, 30*time.Second)
	stop(t, cancel, done)
}

// A machine without a TPM says so and registers with tpm_available=false;
// this daemon allows it.
func TestEndToEndNoTPM(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"allow_no_tpm": true})
	l := newLogs(t)
	out := filepath.Join(t.TempDir(), "config")
	missing := filepath.Join(t.TempDir(), "tpmrm0")
	done := runAgent(t, context.Background(), agent.Config{Server: d.URL, TPM: missing, ConfigOut: out, Once: true, Logger: l.logger()})
	l.wait("no TPM found at "+missing+": registering with tpm_available=false", 1, 30*time.Second)
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	if m := getMachine(t, d, id); m.GetTpmAvailable() {
		t.Errorf("machine %s has tpm_available true, want false", id)
	}
	approve(t, d, id, "no-tpm")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l.count("credential activated") != 0 || l.count("quote sent") != 0 {
		t.Error("a machine without a TPM claimed to activate a credential or quote")
	}
}

// A machine without a TPM whose image requires one never registers: the
// agent fails, naming the setting, and the daemon has no machine.
func TestEndToEndRequireTPM(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"allow_no_tpm": true})
	l := newLogs(t)
	missing := filepath.Join(t.TempDir(), "tpmrm0")
	done := runAgent(t, context.Background(), agent.Config{Server: d.URL, TPM: missing, RequireTPM: true,
		ConfigOut: filepath.Join(t.TempDir(), "config"), Once: true, Logger: l.logger()})
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "attestation.require_tpm") {
		t.Fatalf("agent without a TPM that requires one: %v, want an error naming attestation.require_tpm", err)
	}
	if n := l.count("registered"); n != 0 {
		t.Errorf("the agent registered %d times", n)
	}
	resp, err := machines(d).ListMachines(context.Background(), operator(&attestationv1.ListMachinesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.GetMachines()) != 0 {
		t.Errorf("the daemon has %d machines, want none", len(resp.Msg.GetMachines()))
	}
}

// A machine the control plane cannot tell apart (no TPM, and neither an
// SMBIOS UUID nor a MAC address) is refused as malformed: the same
// request would be refused again, so the agent stops at once with the
// control plane's reason instead of retrying.
func TestEndToEndRefusedForGood(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"allow_no_tpm": true})
	l := newLogs(t)
	cfg := agent.Config{Server: d.URL, TPM: filepath.Join(t.TempDir(), "tpmrm0"), SysRoot: t.TempDir(),
		ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()}
	done := runAgent(t, context.Background(), cfg)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "refused the registration as malformed") || !strings.Contains(err.Error(), "SMBIOS UUID or a MAC") {
			t.Fatalf("agent.Run = %v, want the refusal and the control plane's reason", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent.Run still retrying after 30s, want it to stop at once")
	}
	if n := l.count("registration failed"); n != 0 {
		t.Errorf("registration retried %d times, want none", n)
	}
}

// The session ends while the agent waits for approval (here: it outlives
// its TTL, the agent heartbeating too seldom to renew it): the agent
// attests again and says once more that it is waiting for approval.
func TestEndToEndSessionExpiresWhileWaiting(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"session_ttl": "1500ms"})
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{
		Server: d.URL, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger(),
		HeartbeatInterval: time.Hour,
	})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	l.wait("session rejected: attesting again", 1, 30*time.Second)
	l.wait("attested", 2, 30*time.Second)
	if got := l.wait("waiting for approval", 2, 30*time.Second)["machine"]; got != id {
		t.Errorf("after attesting again the agent waits as machine %s, want %s", got, id)
	}
	approve(t, d, id, "patient-again")
	l.wait("config written", 1, 30*time.Second)
	stop(t, cancel, done)
}

// The session ends while the agent heartbeats (here: it outlives its TTL
// between two heartbeats): the agent attests again and goes on.
func TestEndToEndSessionExpires(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"session_ttl": "1500ms", "heartbeat_interval": "10s"})
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{
		Server: d.URL, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger(),
		HeartbeatInterval: 3 * time.Second,
	})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	approve(t, d, id, "expiring")
	l.wait("config written", 1, 30*time.Second)
	rejected := l.wait("session rejected: attesting again", 1, 30*time.Second)
	if !strings.Contains(rejected["err"], "unauthenticated") {
		t.Errorf("rejection logged as %q, want unauthenticated", rejected["err"])
	}
	l.wait("attested", 2, 30*time.Second)
	hb := l.count("heartbeat")
	l.wait("heartbeat", hb+1, 30*time.Second)
	if m := getMachine(t, d, id); m.GetState() != "provisioned" {
		t.Errorf("after attesting again the machine is %q, want still provisioned", m.GetState())
	}
	if n := l.count("config written"); n != 1 {
		t.Errorf("config written %d times, want once", n)
	}
	stop(t, cancel, done)
}

// The daemon restarts while the agent heartbeats: heartbeats fail for a
// while, then resume with the same session.
func TestEndToEndDaemonRestartWhileHeartbeating(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, daemontest.Options{DataDir: dir}, nil)
	addr := d.Addr.String()
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	approve(t, d, id, "steady")
	l.wait("heartbeat", 1, 30*time.Second)

	d.Stop(t)
	l.wait("heartbeat failed", 1, 30*time.Second)
	startDaemon(t, daemontest.Options{DataDir: dir}, map[string]any{"listen": addr})
	hb := l.count("heartbeat")
	l.wait("heartbeat", hb+1, 30*time.Second)
	if n := l.count("attested"); n != 1 {
		t.Errorf("attested %d times, want once: the session should survive a daemon restart", n)
	}
	stop(t, cancel, done)
}

// Approval takes longer than a session lasts: the agent keeps its session
// alive while it waits, and attests only once.
func TestEndToEndSlowApproval(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"session_ttl": "2500ms"})
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})
	id := l.wait("waiting for approval", 1, time.Minute)["machine"]
	time.Sleep(6 * time.Second)
	if m := getMachine(t, d, id); m.GetLastHeartbeatAt() == nil {
		t.Error("no heartbeat recorded while waiting for approval")
	}
	approve(t, d, id, "patient")
	l.wait("config written", 1, 30*time.Second)
	if n, r := l.count("attested"), l.count("session rejected: attesting again"); n != 1 || r != 0 {
		t.Errorf("attested %d times with %d sessions rejected, want once and none", n, r)
	}
	stop(t, cancel, done)
}
