package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/internal/pgtest"
)

// The test binary runs itself as a daemon when childEnv is set: the crash
// test needs a process it can kill -9.
const (
	childEnv     = "ATTESTATION_DAEMON_TEST_CHILD" // "block" or "record"
	childDirEnv  = "ATTESTATION_DAEMON_TEST_DIR"
	childToken   = "crash-test-admin-token-0123456789"
	recorderName = "crash_test_recorder"
)

// Files the child writes in its directory.
const (
	addrFile     = "addr"     // the API's address, once it listens
	enteredFile  = "entered"  // IDs of events the blocking handler was given
	recordedFile = "recorded" // IDs of events the recording handler has handled
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode, os.Getenv(childDirEnv)))
	}
	os.Exit(pgtest.Run(m))
}

// runChild runs a daemon on loopback with data in dir/data and one extra
// subscriber: in "block" mode it notes the event in dir/entered and never
// returns; in "record" mode it appends the event ID to dir/recorded.
func runChild(mode, dir string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.AdminToken = childToken
	var handle events.Handler
	switch mode {
	case "block":
		// Long enough that the handler is never retried before the kill.
		cfg.EventHandlerTimeout = config.Duration(time.Hour)
		handle = func(_ context.Context, ev events.Envelope) error {
			if err := appendLine(filepath.Join(dir, enteredFile), ev.ID); err != nil {
				return err
			}
			select {} // stuck for good, whatever the context says
		}
	case "record":
		handle = func(_ context.Context, ev events.Envelope) error {
			return appendLine(filepath.Join(dir, recordedFile), ev.ID)
		}
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want block or record\n", childEnv, mode)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := daemon.Run(ctx, cfg, daemon.Options{
		Logger:        log,
		Subscriptions: []events.Subscription{{Name: recorderName, Handle: handle}},
		Listening: func(a net.Addr) {
			tmp := filepath.Join(dir, addrFile+".tmp")
			if err := os.WriteFile(tmp, []byte(a.String()), 0o600); err == nil {
				err = os.Rename(tmp, filepath.Join(dir, addrFile))
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return 1
	}
	return 0
}

// appendLine appends line to the file and syncs it, so that what a handler
// recorded survives the process.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func count(list []string, s string) int {
	n := 0
	for _, l := range list {
		if l == s {
			n++
		}
	}
	return n
}

// child is a daemon subprocess.
type child struct {
	cmd    *exec.Cmd
	url    string
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const hang = 30 * time.Second

func startChild(t *testing.T, dir, mode string) *child {
	t.Helper()
	os.Remove(filepath.Join(dir, addrFile))
	c := &child{stderr: &syncBuffer{}, done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
	c.cmd.Stdout, c.cmd.Stderr = io.Discard, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("%s daemon's log:\n%s", mode, c.stderr)
		}
	})
	deadline := time.Now().Add(hang)
	for {
		b, err := os.ReadFile(filepath.Join(dir, addrFile))
		if err == nil {
			c.url = "http://" + string(b)
			return c
		}
		select {
		case err := <-c.done:
			c.done <- err
			t.Fatalf("%s daemon exited before listening: %v\n%s", mode, err, c.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s daemon did not listen within %s\n%s", mode, hang, c.stderr)
		}
	}
}

// call sends a REST request as the admin and decodes the JSON answer.
func (c *child) call(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+childToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
	}
}

// TestCrashBetweenCommitAndDelivery kills the daemon (SIGKILL) after an
// event is committed and while its delivery is in progress; the restarted
// daemon delivers it.
func TestCrashBetweenCommitAndDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills daemon processes")
	}
	dir := t.TempDir()
	first := startChild(t, dir, "block")

	var reg struct {
		Machine struct{ ID string } `json:"machine"`
	}
	first.call(t, http.MethodPost, "/api/v1/register", map[string]string{"ek_fingerprint": randomFingerprint(t)}, &reg)
	if reg.Machine.ID == "" {
		t.Fatal("register returned no machine ID")
	}
	var list struct {
		Events []struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		} `json:"events"`
	}
	first.call(t, http.MethodGet, "/api/v1/events?machine="+reg.Machine.ID, nil, &list)
	if len(list.Events) != 1 || list.Events[0].Type != string(events.TypeRegistered) {
		t.Fatalf("events of the new machine = %+v, want one node.registered", list.Events)
	}
	id := list.Events[0].ID

	// The handler has the event: delivery is in progress, not acknowledged.
	deadline := time.Now().Add(hang)
	for count(lines(t, filepath.Join(dir, enteredFile)), id) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the blocking handler was not given event %s within %s", id, hang)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-first.done; err == nil {
		t.Fatal("the killed daemon exited cleanly")
	}
	first.done <- nil // for the cleanup
	if got := lines(t, filepath.Join(dir, recordedFile)); count(got, id) != 0 {
		t.Fatalf("event %s recorded before the restart: %v", id, got)
	}

	second := startChild(t, dir, "record")
	deadline = time.Now().Add(hang)
	for count(lines(t, filepath.Join(dir, recordedFile)), id) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("event %s not delivered within %s of the restart", id, hang)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A clean stop saves the cursor: a third start delivers nothing again.
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.done:
		second.done <- err
		if err != nil {
			t.Fatalf("daemon stopped with %v", err)
		}
	case <-time.After(hang):
		t.Fatalf("daemon did not stop within %s of SIGTERM", hang)
	}
	third := startChild(t, dir, "record")
	third.call(t, http.MethodPost, "/api/v1/register", map[string]string{"ek_fingerprint": randomFingerprint(t)}, &reg)
	var next struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	third.call(t, http.MethodGet, "/api/v1/events?machine="+reg.Machine.ID, nil, &next)
	if len(next.Events) != 1 {
		t.Fatalf("events of the second machine = %+v, want one", next.Events)
	}
	deadline = time.Now().Add(hang)
	for count(lines(t, filepath.Join(dir, recordedFile)), next.Events[0].ID) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("event %s not delivered within %s", next.Events[0].ID, hang)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// In order: the first event came before the second, and once only.
	if got := lines(t, filepath.Join(dir, recordedFile)); len(got) != 2 || got[0] != id || got[1] != next.Events[0].ID {
		t.Errorf("recorded %v, want [%s %s]", got, id, next.Events[0].ID)
	}
}

func randomFingerprint(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
