package attestation_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/internal/proctest"
)

// TestOIDCDemo follows the README's "Try it without Keycloak" with the
// real binaries: make run-oidc-demo's script starts the development
// provider and the daemon; the CLI logs in with the device grant, approved
// on the provider's page as alice (an operator); an agent with the TPM
// simulator enrolls; alice approves it, is refused the admin-only configs,
// and the audit trail and the events say it was alice.
func TestOIDCDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a provider, a daemon and an agent")
	}
	bin, home := t.TempDir(), t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./controlplane/cmd/attestationd", "./cli/cmd/attestation", "./agent/cmd/attestation-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	oidc, api := proctest.FreeAddr(t), proctest.FreeAddr(t)
	issuer, apiURL := "http://"+oidc, "http://"+api

	ctx, cancel := context.WithCancel(context.Background())
	var demoOut bytes.Buffer
	demo := exec.CommandContext(ctx, "bash", "tools/oidc-demo.sh")
	demo.Env = append(os.Environ(), "OIDC_LISTEN="+oidc, "LISTEN="+api, "DATA_DIR="+filepath.Join(home, "var"), "BIN="+bin,
		"ATTESTATIOND_FLAGS=--ek-policy any")
	demo.Stdout, demo.Stderr = &demoOut, &demoOut
	demo.Cancel = func() error { return demo.Process.Signal(os.Interrupt) }
	demo.WaitDelay = 10 * time.Second
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		demo.Wait()
		if t.Failed() {
			t.Logf("tools/oidc-demo.sh:\n%s", demoOut.String())
		}
	})
	waitFor(t, "the daemon answering /healthz", 90*time.Second, func() bool {
		resp, err := http.Get(apiURL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "ATTESTATION_API_URL="+apiURL,
		"ATTESTATION_TOKEN=")
	// cli runs the CLI and returns its output, stderr after stdout.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "attestation"), args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String() + stderr.String(), err
	}

	// Log in: the CLI prints the code and polls; the person approves it on
	// the provider's page as alice.
	login := exec.Command(filepath.Join(bin, "attestation"), "auth", "login", "--issuer", issuer)
	login.Env = env
	pr, pw := io.Pipe()
	login.Stdout, login.Stderr = pw, pw
	if err := login.Start(); err != nil {
		t.Fatal(err)
	}
	codeRE := regexp.MustCompile(`user_code=([A-Za-z0-9-]+)`)
	var loginOut strings.Builder
	code := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			loginOut.WriteString(sc.Text() + "\n")
			if m := codeRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case code <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case c := <-code:
		resp, err := http.PostForm(issuer+"/device", url.Values{"user_code": {c}, "username": {"alice"}, "action": {"approve"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	case <-time.After(30 * time.Second):
		t.Fatalf("auth login printed no verification URL with a code")
	}
	err := login.Wait()
	pw.Close()
	if err != nil {
		t.Fatalf("auth login: %v\n%s", err, loginOut.String())
	}
	if out, err := cli("auth", "status"); err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "operator") {
		t.Fatalf("auth status: %v\n%s", err, out)
	}

	agent := exec.Command(filepath.Join(bin, "attestation-agent"), "--server", apiURL, "--tpm", "simulator", "--once",
		"--config-out", filepath.Join(home, "config.yaml"))
	var agentOut bytes.Buffer
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	var id string
	waitFor(t, "the machine attesting", 60*time.Second, func() bool {
		out, err := cli("machines", "list", "--state", "attested", "-o", "json")
		var list []struct {
			ID string `json:"id"`
		}
		if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) == 0 {
			return false
		}
		id = list[0].ID
		return true
	})

	if out, err := cli("machines", "approve", id, "--role", "demo", "--hostname", "demo-1"); err != nil {
		t.Fatalf("machines approve as alice: %v\n%s", err, out)
	}
	if out, err := cli("configs", "list"); err == nil || !strings.Contains(out, "needs the admin role") {
		t.Errorf("configs list as alice: %v, %s; want refused as admin's", err, out)
	}
	out, err := cli("audit", "list", "--machine", id)
	if err != nil {
		t.Fatalf("audit list: %v\n%s", err, out)
	}
	for _, want := range []string{"alice", "machine.approve", "ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %q:\n%s", want, out)
		}
	}
	out, err = cli("events", "list", "--machine", id, "-o", "json")
	if err != nil || !regexp.MustCompile(`"name":\s*"alice"`).MatchString(out) {
		t.Errorf("events list: %v; want node.provisioned's actor alice:\n%s", err, out)
	}
}

// waitFor polls cond every 200 ms until it holds, failing after limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s did not happen within %s", what, limit)
}
