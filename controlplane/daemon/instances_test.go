package daemon_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/internal/pgtest"
	"github.com/attestation/attestation/internal/proctest"
	"github.com/attestation/attestation/internal/testenv"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

const instancesToken = "instances-test-admin-token"

// instance is one attestationd process of several over one database.
type instance struct {
	url    string
	output func() string
	cmd    *exec.Cmd
}

// startInstances builds attestationd and runs n instances of it over one
// fresh PostgreSQL database, each with a data directory of its own and
// the config token key they share (--config-token-key, as an operator
// gives every instance the same file).
func startInstances(t *testing.T, n int, args ...string) []*instance {
	t.Helper()
	dsn := pgtest.DSN(t)
	key := filepath.Join(t.TempDir(), daemon.ConfigTokenKeyFile)
	secret := make([]byte, machines.ConfigTokenKeySize)
	rand.Read(secret)
	if err := os.WriteFile(key, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	goTool := testenv.LookPath(t, "go", "the Go toolchain")
	bin := filepath.Join(t.TempDir(), "attestationd")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/attestation/attestation/controlplane/cmd/attestationd").CombinedOutput(); err != nil {
		t.Fatalf("build attestationd: %v\n%s", err, out)
	}
	var out []*instance
	for range n {
		addr := proctest.FreeAddr(t)
		cmd := exec.Command(bin, append([]string{"--listen", addr, "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--database", dsn, "--config-token-key", key, "--allow-no-tpm"}, args...)...)
		cmd.Env = append(os.Environ(), "ATTESTATION_ADMIN_TOKEN="+instancesToken, "ATTESTATION_LOG_FORMAT=text")
		u, output := proctest.StartOutput(t, cmd, addr)
		out = append(out, &instance{url: u, output: output, cmd: cmd})
	}
	return out
}

func operator() connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+instancesToken)
			return next(ctx, req)
		}
	}))
}

// enrollNoTPM registers and attests a machine without a TPM through in,
// returning its ID and session token.
func enrollNoTPM(t *testing.T, in *instance, n int) (string, string) {
	t.Helper()
	agent := attestationv1connect.NewAgentServiceClient(http.DefaultClient, in.url)
	reg, err := agent.Register(t.Context(), connect.NewRequest(&attestationv1.RegisterRequest{
		Hardware: &attestationv1.Hardware{SmbiosUuid: fmt.Sprintf("4c4c4544-0000-0000-0000-%012d", n), Macs: []string{fmt.Sprintf("52:54:00:00:01:%02x", n)}},
	}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	att, err := agent.Attest(t.Context(), connect.NewRequest(&attestationv1.AttestRequest{ChallengeId: reg.Msg.ChallengeId}))
	if err != nil || att.Msg.State != "attested" {
		t.Fatalf("Attest: %v, %v; want attested", att, err)
	}
	return reg.Msg.MachineId, att.Msg.SessionToken
}

// watchConfigURL watches a machine's approval through the daemon at
// base with the agent's session token until the watch hands out the
// one-time config URL.
func watchConfigURL(t *testing.T, base, session string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	watch := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
	watch.Header().Set("Authorization", "Bearer "+session)
	stream, err := attestationv1connect.NewAgentServiceClient(http.DefaultClient, base).WatchApproval(ctx, watch)
	if err != nil {
		t.Fatalf("WatchApproval: %v", err)
	}
	defer stream.Close()
	for stream.Receive() {
		if u := stream.Msg().ConfigUrl; u != "" {
			return u
		}
	}
	t.Fatalf("the watch ended without a config URL: %v", stream.Err())
	return ""
}

// TestInstancesConfigTokenOnce: a machine's one-time config URL, fetched
// 100 times at once through two instances over one PostgreSQL, is served
// once in total.
func TestInstancesConfigTokenOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two attestationd over PostgreSQL")
	}
	testenv.Integration(t, "two attestationd over PostgreSQL: a config URL fetched once in total")
	ins := startInstances(t, 2)
	a, b := ins[0], ins[1]
	ctx := t.Context()
	id, session := enrollNoTPM(t, a, 1)
	// Approved through the other instance: the token key is shared.
	machines := attestationv1connect.NewMachineServiceClient(http.DefaultClient, b.url, operator())
	if _, err := machines.ApproveMachine(ctx, connect.NewRequest(&attestationv1.ApproveMachineRequest{Id: id, Role: "worker", Hostname: "node-1"})); err != nil {
		t.Fatalf("ApproveMachine on B: %v", err)
	}
	configURL := watchConfigURL(t, a.url, session)
	u, err := url.Parse(configURL)
	if err != nil {
		t.Fatal(err)
	}

	const fetches = 100
	codes := make([]int, fetches)
	var wg sync.WaitGroup
	for i := range fetches {
		wg.Go(func() {
			resp, err := http.Get(ins[i%len(ins)].url + u.Path)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	t.Logf("%d fetches over %d instances: %v", fetches, len(ins), count)
	if count[http.StatusOK] != 1 || count[http.StatusOK]+count[http.StatusGone]+count[http.StatusNotFound] != fetches {
		t.Errorf("answers %v: want exactly one 200, the others 410 or 404", count)
	}
}

// TestInstancesHeartbeatMissedOnce: three instances over one PostgreSQL
// sweep heartbeats; each silent machine gets one node.heartbeat_missed,
// and one instance leads the sweep.
func TestInstancesHeartbeatMissedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three attestationd over PostgreSQL")
	}
	testenv.Integration(t, "three attestationd over PostgreSQL: one node.heartbeat_missed per silent machine")
	ins := startInstances(t, 3, "--heartbeat-interval", "1s")
	var ids []string
	for i, in := range ins {
		id, _ := enrollNoTPM(t, in, 10+i)
		ids = append(ids, id)
	}
	// Missed after three intervals; sweeps every half interval: wait
	// for several sweeps past the deadline by every instance.
	events := attestationv1connect.NewEventServiceClient(http.DefaultClient, ins[0].url, operator())
	missed := func(id string) int {
		evs, err := events.ListEvents(t.Context(), connect.NewRequest(&attestationv1.ListEventsRequest{Machine: id}))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs.Msg.Events {
			if e.Type == "node.heartbeat_missed" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for missed(id) == 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second)
	for _, id := range ids {
		if n := missed(id); n != 1 {
			t.Errorf("machine %s: %d node.heartbeat_missed, want 1", id, n)
		}
	}
	leaders := 0
	for _, in := range ins {
		if strings.Contains(in.output(), "msg=leading lease=heartbeat-sweeper") {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d instances lead the heartbeat sweeper, want 1", leaders)
	}
}

// TestInstancesOutboxFailover: two instances over one PostgreSQL, a
// webhook target on both; events of machines changed through either reach
// the target, and when the instance that leads events-dispatch is killed
// with SIGKILL, the other takes the lease over and nothing is lost.
func TestInstancesOutboxFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two attestationd over PostgreSQL")
	}
	testenv.Integration(t, "two attestationd over PostgreSQL: the event outbox survives a kill -9 of its leader")
	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		got = append(got, ev.ID)
		mu.Unlock()
	}))
	defer hook.Close()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("extensions:\n  webhook:\n    targets:\n      - name: test\n        url: "+hook.URL+"\n        secret: s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ins := startInstances(t, 2, "--config", cfg)
	received := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]int{}
		for _, s := range got {
			m[s]++
		}
		return m
	}
	// waitAll waits until the target has every event the database holds.
	waitAll := func(via *instance) []string {
		t.Helper()
		evs := attestationv1connect.NewEventServiceClient(http.DefaultClient, via.url, operator())
		deadline := time.Now().Add(30 * time.Second)
		for {
			list, err := evs.ListEvents(t.Context(), connect.NewRequest(&attestationv1.ListEventsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			missing := 0
			r := received()
			for _, e := range list.Msg.Events {
				ids = append(ids, e.Id)
				if r[e.Id] == 0 {
					missing++
				}
			}
			if missing == 0 && len(ids) > 0 {
				return ids
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events not delivered within 30s", missing, len(ids))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i := range 4 {
		enrollNoTPM(t, ins[i%2], 20+i)
	}
	before := waitAll(ins[0])
	// Steady state: each delivered once.
	for id, n := range received() {
		if n != 1 {
			t.Errorf("before the kill, event %s reached the target %d times, want once", id, n)
		}
	}

	leader, other := ins[0], ins[1]
	if !strings.Contains(leader.output(), "msg=leading lease=events-dispatch") {
		leader, other = other, leader
	}
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for !strings.Contains(other.output(), "msg=leading lease=events-dispatch") {
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("no instance took the lease over within 15s:\n%s", other.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("events-dispatch taken over %v after the leader's kill -9", time.Since(killed).Round(time.Millisecond))
	for i := range 3 {
		enrollNoTPM(t, other, 30+i)
	}
	after := waitAll(other)
	if len(after) <= len(before) {
		t.Fatalf("%d events after the kill, %d before: want more", len(after), len(before))
	}
	// In order: each event first reaches the target after the ones
	// committed before it (the list is in commit order).
	commit := map[string]int{}
	for i, id := range after {
		commit[id] = i
	}
	mu.Lock()
	first := map[string]bool{}
	var order []int
	dups := 0
	for _, s := range got {
		if first[s] {
			dups++
			continue
		}
		first[s] = true
		order = append(order, commit[s])
	}
	mu.Unlock()
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Errorf("event %s reached the target before event %s", after[order[i]], after[order[i-1]])
			break
		}
	}
	t.Logf("%d events delivered, %d deliveries repeated (at least once across the kill)", len(order), dups)
}
