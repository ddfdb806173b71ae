// Package extensiontest is the test kit for extension authors: it starts a
// real attestationd on a loopback port with a temporary SQLite database and
// exactly the extensions a test chooses, and runs attestation CLI commands
// (with those extensions' command groups) against it, so an extension is
// tested through the same front door its users have.
//
//	func TestTags(t *testing.T) {
//		kit := extensiontest.Start(t, &tags.Extension{})
//		id := kit.RegisterMachine(t)
//		res := kit.CLI("tag", "add", id, "rack=r1")
//		if res.Code != 0 { t.Fatal(res.Stderr) }
//	}
package extensiontest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver for DB
)

// Kit is a running daemon with the chosen extensions.
type Kit struct {
	*daemontest.Daemon
	exts []extensions.Extension
}

// Options tune the kit; the zero value is fine.
type Options = daemontest.Options

// Start runs a daemon with exactly exts until the test ends.
func Start(t testing.TB, exts ...extensions.Extension) *Kit {
	t.Helper()
	return StartWith(t, Options{}, exts...)
}

// StartWith is Start with daemon options (data dir, config, logger).
func StartWith(t testing.TB, o Options, exts ...extensions.Extension) *Kit {
	t.Helper()
	o.Extensions = exts
	return &Kit{Daemon: daemontest.Start(t, o), exts: exts}
}

// Result is what a CLI command printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// CLI runs the attestation command line with args against the kit's
// daemon (URL and admin token set through the environment) and the kit's
// extensions' command groups.
func (k *Kit) CLI(args ...string) Result {
	return k.CLIEnv(map[string]string{cli.EnvURL: k.URL, cli.EnvToken: k.Token}, args...)
}

// CLIEnv runs the command line with exactly the given environment.
func (k *Kit) CLIEnv(env map[string]string, args ...string) Result {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := cli.RunWith(ctx, cli.Options{
		Args:       args,
		Stdin:      strings.NewReader(""),
		Stdout:     &out,
		Stderr:     &errb,
		Getenv:     func(k string) string { return env[k] },
		Extensions: append([]extensions.Extension{}, k.exts...),
	})
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Do sends an authenticated REST request (body, when not nil, as JSON) to
// path under the daemon's URL and returns the status and the body.
func (k *Kit) Do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, k.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// DoRaw sends a request with exactly the given body and headers (no
// token unless h has one) and returns the status and the body.
func (k *Kit) DoRaw(t testing.TB, method, path string, body io.Reader, h http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, k.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for name, vs := range h {
		req.Header[name] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// DB opens the daemon's database read-only (closed when the test ends),
// for checking what an extension wrote.
func (k *Kit) DB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+k.DatabasePath()+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// RegisterMachine pre-registers a machine with a random EK fingerprint
// through the API and returns its ID.
func (k *Kit) RegisterMachine(t testing.TB) string {
	t.Helper()
	raw := make([]byte, 32)
	rand.Read(raw)
	status, body := k.Do(t, http.MethodPost, "/api/v1/register", map[string]any{"ek_fingerprint": hex.EncodeToString(raw)})
	if status != http.StatusOK {
		t.Fatalf("register machine: HTTP %d: %s", status, body)
	}
	var resp struct {
		Machine struct {
			ID string `json:"id"`
		} `json:"machine"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.Machine.ID == "" {
		t.Fatalf("register machine: decode %s: %v", body, err)
	}
	return resp.Machine.ID
}
