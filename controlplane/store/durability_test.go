package store_test

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/store"

	"github.com/attestation/attestation/internal/testenv"
)

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// TestAcknowledgedWriteSurvivesKill pre-registers a machine through a real
// attestationd process, kills it with SIGKILL as soon as the 200 arrives,
// and finds the machine and its event in the database.
func TestAcknowledgedWriteSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs attestationd")
	}
	testenv.Integration(t, "kill -9 after an acknowledged write")
	goTool := testenv.LookPath(t, "go", "the Go toolchain")
	bin := filepath.Join(t.TempDir(), "attestationd")
	build := exec.Command(goTool, "build", "-o", bin, "github.com/attestation/attestation/controlplane/cmd/attestationd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build attestationd: %v\n%s", err, out)
	}

	const token = "durability-test-token"
	dataDir := t.TempDir()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data-dir", dataDir)
	cmd.Env = append(os.Environ(), "ATTESTATION_ADMIN_TOKEN="+token, "ATTESTATION_LOG_FORMAT=text")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The daemon logs its address; report what it logged if it dies first.
	addr, died := make(chan string, 1), make(chan string, 1)
	go func() {
		var logs strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
				io.Copy(io.Discard, stderr)
				return
			}
		}
		died <- logs.String()
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case logs := <-died:
		t.Fatalf("attestationd exited before listening:\n%s", logs)
	case <-time.After(30 * time.Second):
		t.Fatal("attestationd did not log msg=listening within 30s")
	}

	fp := strings.Repeat("5a", 32)
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/register",
		strings.NewReader(`{"ek_fingerprint":"`+fp+`","macs":["52:54:00:00:00:5a"],"role":"worker"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	status := resp.StatusCode
	body, _ := io.ReadAll(resp.Body)
	// Kill as soon as the acknowledgement is in: nothing gets to flush.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cmd.Wait()
	if status != http.StatusOK {
		t.Fatalf("register: got HTTP %d %s, want 200", status, body)
	}

	st, err := store.Open(t.Context(), filepath.Join(dataDir, "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.GetMachineByEK(t.Context(), fp)
	if err != nil {
		t.Fatalf("machine after kill -9: got %v, want it found", err)
	}
	if m.State != "registered" || m.Role != "worker" {
		t.Errorf("machine after kill -9: got state %q role %q, want registered worker", m.State, m.Role)
	}
	evs, err := st.ListEvents(t.Context(), store.EventFilter{MachineID: m.ID})
	if err != nil || len(evs) != 1 || evs[0].Type != "node.registered" {
		t.Errorf("events after kill -9: got %+v, %v, want one node.registered", evs, err)
	}
}
