package cli_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/internal/oidcdev"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var oidcUsers = []oidcdev.User{
	{Username: "alice", Name: "Alice Operator", Roles: []string{"operator"}, Groups: []string{"/ops"}},
	{Username: "bob", Roles: []string{"viewer"}},
}

// startOIDC runs a development OIDC provider with one-second polls.
func startOIDC(t *testing.T, o oidcdev.Options) *oidcdev.Provider {
	t.Helper()
	o.Users, o.PollInterval = oidcUsers, time.Second
	p, err := oidcdev.Start(o)
	if err != nil {
		t.Fatalf("OIDC provider: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

var userCodeRE = regexp.MustCompile(`enter the code (\S+)`)

// login runs `attestation auth login ARGS` with env and, once it prints
// its code, answers for it at p: approves it as username, or denies it
// when username is "".
func login(t *testing.T, p *oidcdev.Provider, env environ, username string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, append([]string{"auth", "login"}, args...), strings.NewReader(""), &stdout, &stderr, env.get)
	}()
	for {
		select {
		case code := <-done:
			return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
		case <-time.After(20 * time.Millisecond):
		}
		if m := userCodeRE.FindStringSubmatch(stdout.String()); m != nil {
			answer := func() error { return p.Approve(m[1], username) }
			if username == "" {
				answer = func() error { return p.Deny(m[1]) }
			}
			if err := answer(); err != nil {
				t.Fatalf("answer code %s: %v", m[1], err)
			}
			code := <-done
			return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
		}
	}
}

// loggedIn logs in as username with a fresh config directory and returns
// the environment that holds the login.
func loggedIn(t *testing.T, p *oidcdev.Provider, username, apiURL string) environ {
	t.Helper()
	env := environ{"XDG_CONFIG_HOME": t.TempDir(), cli.EnvURL: apiURL}
	if r := login(t, p, env, username, "--issuer", p.Issuer()); r.code != 0 {
		t.Fatalf("auth login: exit %d, stderr %q", r.code, r.stderr)
	}
	return env
}

// tokenFile is the token cache as the file has it.
type tokenFile struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	Expiry       time.Time `json:"expiry"`
}

func cachePath(env environ) string {
	return filepath.Join(env["XDG_CONFIG_HOME"], "attestation", "token.json")
}

func readCache(t *testing.T, env environ) tokenFile {
	t.Helper()
	b, err := os.ReadFile(cachePath(env))
	if err != nil {
		t.Fatalf("token cache: %v", err)
	}
	return decode[tokenFile](t, "token cache", string(b))
}

// recorder is a daemon stand-in that records the Authorization header of
// every request: machines list answers no machines, /ext answers 200.
type recorder struct {
	attestationv1connect.UnimplementedMachineServiceHandler
	URL string
	mu  sync.Mutex
	got []string
}

func (r *recorder) record(h http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, h.Get("Authorization"))
}

// last is the Authorization header of the last request.
func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

func (r *recorder) ListMachines(_ context.Context, req *connect.Request[attestationv1.ListMachinesRequest]) (*connect.Response[attestationv1.ListMachinesResponse], error) {
	r.record(req.Header())
	return connect.NewResponse(&attestationv1.ListMachinesResponse{}), nil
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.Handle(attestationv1connect.NewMachineServiceHandler(rec))
	mux.HandleFunc("/ext", func(w http.ResponseWriter, req *http.Request) { rec.record(req.Header) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

// probeExt is an extension whose command calls the daemon with the CLI's
// HTTP client, as extensions do.
type probeExt struct{}

func (probeExt) Info() extensions.Info {
	return extensions.Info{Name: "probe", Version: "0.0.1", Description: "calls /ext"}
}

func (probeExt) Commands(c extensions.CLI) ([]*cobra.Command, error) {
	return []*cobra.Command{{
		Use: "probe",
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := c.HTTPClient().Get(c.BaseURL() + "/ext")
			if err != nil {
				return err
			}
			resp.Body.Close()
			fmt.Fprintln(c.Stdout(), "probe:", resp.Status)
			return nil
		},
	}}, nil
}

// runExt runs the CLI with probeExt compiled in.
func runExt(t *testing.T, env environ, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	code := cli.RunWith(ctx, cli.Options{
		Args: args, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: env.get, Extensions: []extensions.Extension{probeExt{}},
	})
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// A device login against a real provider: the code is approved while the
// CLI polls; the tokens land in the cache, owner-only; every command,
// core and extension, sends the access token; --token still wins.
func TestAuthLogin(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{AccessTokenLifetime: time.Hour})
	rec := startRecorder(t)
	env := environ{"XDG_CONFIG_HOME": t.TempDir(), cli.EnvURL: rec.URL}

	r := login(t, p, env, "alice", "--issuer", p.Issuer())
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("auth login: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"open " + p.DeviceURL() + "\n", "(or open " + p.DeviceURL() + "?user_code=", "Waiting for approval",
		"Logged in to " + p.Issuer() + " as alice (Alice Operator); roles: operator, /ops.",
		cachePath(env), "refreshed as it expires",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("login output: missing %q in\n%s", want, r.stdout)
		}
	}

	path := cachePath(env)
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Dir(path), 0o700)
	c := readCache(t, env)
	if c.Issuer != p.Issuer() || c.ClientID != "attestation-cli" || c.RefreshToken == "" || c.TokenType != "Bearer" {
		t.Errorf("token cache: got %+v; want the issuer, client attestation-cli, a refresh token, Bearer", c)
	}
	if left := time.Until(c.Expiry); left < 59*time.Minute || left > time.Hour {
		t.Errorf("token cache: expiry in %s, want the hour the provider gives", left)
	}
	prov, err := oidc.NewProvider(context.Background(), p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov.Verifier(&oidc.Config{ClientID: "attestation"}).Verify(context.Background(), c.AccessToken); err != nil {
		t.Errorf("cached access token does not verify: %v", err)
	}

	t.Run("core command sends it", func(t *testing.T) {
		if r := runCLI(t, env, "machines", "list"); r.code != 0 {
			t.Fatalf("machines list: exit %d, stderr %q", r.code, r.stderr)
		}
		if got := rec.last(); got != "Bearer "+c.AccessToken {
			t.Errorf("Authorization: got %q, want the cached access token", got)
		}
	})
	t.Run("extension command sends it", func(t *testing.T) {
		if r := runExt(t, env, "probe"); r.code != 0 || !strings.Contains(r.stdout, "200 OK") {
			t.Fatalf("probe: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if got := rec.last(); got != "Bearer "+c.AccessToken {
			t.Errorf("Authorization: got %q, want the cached access token", got)
		}
	})
	t.Run("token flag wins", func(t *testing.T) {
		if r := runCLI(t, env, "machines", "list", "--token", "static-token"); r.code != 0 {
			t.Fatalf("machines list: exit %d, stderr %q", r.code, r.stderr)
		}
		if got := rec.last(); got != "Bearer static-token" {
			t.Errorf("Authorization: got %q, want the --token one", got)
		}
		env := environ{"XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"], cli.EnvURL: rec.URL, cli.EnvToken: "env-token"}
		if r := runExt(t, env, "probe"); r.code != 0 || rec.last() != "Bearer env-token" {
			t.Errorf("probe with %s: exit %d, sent %q; want the variable's token", cli.EnvToken, r.code, rec.last())
		}
	})

	t.Run("status", func(t *testing.T) {
		r := runCLI(t, env, "auth", "status")
		if r.code != 0 {
			t.Fatalf("auth status: exit %d, stderr %q", r.code, r.stderr)
		}
		for _, want := range []string{
			"Issuer:", p.Issuer(), "User:", "alice (Alice Operator)", "Subject:", oidcdev.SubjectOf("alice"),
			"Realm roles:", "operator", "Groups:", "/ops", "Expires:", "(in ", "Refresh token:", "yes", "Token file:", path,
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("auth status: missing %q in\n%s", want, r.stdout)
			}
		}
		type status struct {
			Issuer            string    `json:"issuer"`
			Subject           string    `json:"subject"`
			PreferredUsername string    `json:"preferred_username"`
			RealmRoles        []string  `json:"realm_roles"`
			Groups            []string  `json:"groups"`
			Expiry            time.Time `json:"expiry"`
			Expired           bool      `json:"expired"`
			RefreshToken      bool      `json:"refresh_token"`
		}
		got := decode[status](t, "auth status -o json", runCLI(t, env, "auth", "status", "-o", "json").stdout)
		if got.Issuer != p.Issuer() || got.PreferredUsername != "alice" || got.Subject != oidcdev.SubjectOf("alice") ||
			strings.Join(got.RealmRoles, ",") != "operator" || strings.Join(got.Groups, ",") != "/ops" ||
			!got.Expiry.Equal(c.Expiry) || got.Expired || !got.RefreshToken {
			t.Errorf("auth status -o json: got %+v", got)
		}
		var y status
		if err := yaml.Unmarshal([]byte(runCLI(t, env, "auth", "status", "-o", "yaml").stdout), &y); err != nil || y.PreferredUsername != "alice" {
			t.Errorf("auth status -o yaml: got %+v, %v", y, err)
		}
	})
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// The login works against the daemon itself: it accepts alice's
// operator token and refuses bob, a viewer, what viewers may not do.
func TestAuthLoginDaemon(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{})
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) {
		c.OIDCIssuer, c.OIDCAudience = p.Issuer(), "attestation"
	}})

	alice := loggedIn(t, p, "alice", d.URL)
	m := register(t, func(args ...string) string {
		t.Helper()
		r := runCLI(t, alice, args...)
		if r.code != 0 {
			t.Fatalf("attestation %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}, "oidc-login")
	if r := runCLI(t, alice, "machines", "list"); r.code != 0 || !strings.Contains(r.stdout, m.ID) {
		t.Errorf("machines list as alice: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	bob := loggedIn(t, p, "bob", d.URL)
	if r := runCLI(t, bob, "machines", "list"); r.code != 0 {
		t.Errorf("machines list as bob: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI(t, bob, "machines", "revoke", m.ID, "--reason", "test"); r.code != 1 || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("machines revoke as bob: exit %d, stderr %q; want permission denied", r.code, r.stderr)
	}
}

// An access token that expires within the refresh margin is refreshed
// before it is sent, and the cache rewritten with the new tokens.
func TestAuthRefresh(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{AccessTokenLifetime: 2 * time.Second})
	rec := startRecorder(t)
	env := loggedIn(t, p, "alice", rec.URL)
	before := readCache(t, env)

	if r := runCLI(t, env, "machines", "list"); r.code != 0 {
		t.Fatalf("machines list: exit %d, stderr %q", r.code, r.stderr)
	}
	after := readCache(t, env)
	if after.AccessToken == before.AccessToken || !after.Expiry.After(before.Expiry) {
		t.Fatalf("cache after the command: same access token or expiry; want a refreshed one")
	}
	if after.RefreshToken == "" || after.RefreshToken == before.RefreshToken {
		t.Errorf("cache after the command: want the provider's new (rotated) refresh token")
	}
	if got := rec.last(); got != "Bearer "+after.AccessToken {
		t.Errorf("Authorization: got %q, want the refreshed access token", got)
	}
	assertMode(t, cachePath(env), 0o600)

	time.Sleep(2100 * time.Millisecond) // the refreshed token has expired too
	if r := runExt(t, env, "probe"); r.code != 0 {
		t.Fatalf("probe: exit %d, stderr %q", r.code, r.stderr)
	}
	if again := readCache(t, env); again.AccessToken == after.AccessToken || rec.last() != "Bearer "+again.AccessToken {
		t.Errorf("extension command after expiry: want a refreshed token sent and cached")
	}

	// Status shows the cache as it is: it refreshes nothing.
	time.Sleep(2100 * time.Millisecond)
	if r := runCLI(t, env, "auth", "status"); r.code != 0 || !strings.Contains(r.stdout, "(expired ") {
		t.Errorf("auth status of an expired token: exit %d, want it said expired, got\n%s", r.code, r.stdout)
	}
	if st := decode[struct{ Expired bool }](t, "auth status -o json", runCLI(t, env, "auth", "status", "-o", "json").stdout); !st.Expired {
		t.Errorf("auth status -o json: expired false, want true")
	}
}

// wantLoginError checks that r failed with one line on stderr saying
// what is in want.
func wantLoginError(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("got exit %d, stderr %q; want exit 1 and one line", r.code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q: want %q", r.stderr, w)
		}
	}
}

// A refresh token revoked at the provider (an administrator ended the
// session) ends the command with exit 1 and the way to log in again.
func TestAuthRevokedRefreshToken(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{AccessTokenLifetime: 2 * time.Second})
	rec := startRecorder(t)
	env := loggedIn(t, p, "alice", rec.URL)
	if n := p.EndSessions("alice"); n != 1 {
		t.Fatalf("EndSessions: %d, want 1", n)
	}
	want := []string{"attestation: your login at " + p.Issuer() + " has expired", "invalid_grant", "run `attestation auth login`"}
	wantLoginError(t, runCLI(t, env, "machines", "list"), want...)
	wantLoginError(t, runCLI(t, env, "events", "watch"), want...)
	wantLoginError(t, runExt(t, env, "probe"), want...)
	if got := rec.last(); got != "" {
		t.Errorf("a request was sent with %q; want none", got)
	}
}

// Logout revokes the refresh token at the provider and deletes the
// cache: the same refresh token no longer works.
func TestAuthLogout(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{AccessTokenLifetime: 2 * time.Second})
	env := loggedIn(t, p, "alice", closedURL(t))
	saved, err := os.ReadFile(cachePath(env))
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, env, "auth", "logout")
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Logged out of "+p.Issuer()+": revoked the refresh token; deleted "+cachePath(env)) {
		t.Fatalf("auth logout: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(cachePath(env)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token cache after logout: %v, want it gone", err)
	}

	// The refresh token the cache held was revoked: with the file put
	// back, the next command's refresh fails.
	if err := os.WriteFile(cachePath(env), saved, 0o600); err != nil {
		t.Fatal(err)
	}
	wantLoginError(t, runCLI(t, env, "machines", "list"), "has expired", "run `attestation auth login`")
	os.Remove(cachePath(env))

	wantLoginError(t, runCLI(t, env, "auth", "status"), "not logged in: run `attestation auth login`")
	if r := runCLI(t, env, "auth", "logout"); r.code != 0 || !strings.Contains(r.stdout, "Not logged in") {
		t.Errorf("auth logout again: exit %d, stdout %q", r.code, r.stdout)
	}
}

// A failed revocation is a warning; the login is forgotten all the same.
func TestAuthLogoutProviderDown(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{})
	env := loggedIn(t, p, "alice", closedURL(t))
	p.Close()
	r := runCLI(t, env, "auth", "logout")
	if r.code != 0 || !strings.Contains(r.stderr, "attestation: warning: could not revoke the refresh token at "+p.Issuer()) ||
		!strings.Contains(r.stdout, "the refresh token was not revoked; deleted") {
		t.Errorf("auth logout: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(cachePath(env)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token cache after logout: %v, want it gone", err)
	}
}

// Without --token, ATTESTATION_TOKEN or a login, commands that need the
// daemon say how to get a token; the others need none.
func TestNoToken(t *testing.T) {
	t.Parallel()
	rec := startRecorder(t)
	env := environ{"XDG_CONFIG_HOME": t.TempDir(), cli.EnvURL: rec.URL}
	want := []string{"not logged in", "run `attestation auth login`", "--token", cli.EnvToken, "DATA_DIR/admin-token"}
	wantLoginError(t, runCLI(t, env, "machines", "list"), want...)
	wantLoginError(t, runCLI(t, env, "events", "watch"), want...)
	wantLoginError(t, runExt(t, env, "probe"), want...)
	if r := runCLI(t, environ{}, "machines", "list"); r.code != 1 || !strings.Contains(r.stderr, "attestation auth login") {
		t.Errorf("without HOME: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := rec.last(); got != "" {
		t.Errorf("a request was sent with %q; want none", got)
	}
	for _, args := range [][]string{{"--help"}, {"--version"}, {"machines", "list", "--help"}, {"auth", "login", "--help"}, {"auth", "logout"}} {
		if r := runCLI(t, env, args...); r.code != 0 {
			t.Errorf("attestation %s: exit %d, stderr %q; want 0", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	wantLoginError(t, runCLI(t, env, "auth", "status"), "not logged in")
}

func TestAuthLoginErrors(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{})

	t.Run("no issuer", func(t *testing.T) {
		r := runCLI(t, environ{"XDG_CONFIG_HOME": t.TempDir()}, "auth", "login")
		if r.code != 1 || !strings.Contains(r.stderr, "no OIDC issuer: pass --issuer or set "+cli.EnvOIDCIssuer) ||
			!strings.Contains(r.stderr, "auth login --help") {
			t.Errorf("got exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("denied", func(t *testing.T) {
		env := environ{"XDG_CONFIG_HOME": t.TempDir()}
		r := login(t, p, env, "", "--issuer", p.Issuer())
		wantLoginError(t, r, "the login was denied at "+p.Issuer())
		if _, err := os.Stat(cachePath(env)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("token cache after a denied login: %v, want none", err)
		}
	})
	t.Run("unknown client", func(t *testing.T) {
		env := environ{"XDG_CONFIG_HOME": t.TempDir(), cli.EnvOIDCIssuer: p.Issuer(), cli.EnvOIDCClientID: "nobody"}
		wantLoginError(t, runCLI(t, env, "auth", "login"), "refused a device login for client nobody", "Device Authorization Grant")
	})
	t.Run("not a provider", func(t *testing.T) {
		down := closedURL(t)
		wantLoginError(t, runCLI(t, environ{"XDG_CONFIG_HOME": t.TempDir()}, "auth", "login", "--issuer", down),
			"discover the OIDC provider "+down)
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var stdout, stderr syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- cli.Run(ctx, []string{"auth", "login", "--issuer", p.Issuer()}, strings.NewReader(""), &stdout, &stderr,
				environ{"XDG_CONFIG_HOME": t.TempDir()}.get)
		}()
		for !strings.Contains(stdout.String(), "Waiting for approval") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel() // Ctrl-C
		select {
		case code := <-done:
			if code != 1 || stderr.String() != "attestation: login canceled\n" {
				t.Errorf("got exit %d, stderr %q; want 1, login canceled", code, stderr.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("login went on polling after its context ended")
		}
	})
}

// The issuer and client ID come from the environment, else from the
// current login; a second login replaces the first.
func TestAuthLoginDefaults(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{ClientID: "ops-cli"})
	env := environ{"XDG_CONFIG_HOME": t.TempDir(), cli.EnvOIDCIssuer: p.Issuer(), cli.EnvOIDCClientID: "ops-cli"}
	if r := login(t, p, env, "alice"); r.code != 0 {
		t.Fatalf("login from the environment: exit %d, stderr %q", r.code, r.stderr)
	}
	if c := readCache(t, env); c.Issuer != p.Issuer() || c.ClientID != "ops-cli" {
		t.Fatalf("cache: got issuer %q, client %q", c.Issuer, c.ClientID)
	}
	again := environ{"XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"]}
	if r := login(t, p, again, "bob"); r.code != 0 || !strings.Contains(r.stdout, "as bob;") {
		t.Fatalf("login from the current login: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if c := readCache(t, env); c.Issuer != p.Issuer() || c.ClientID != "ops-cli" {
		t.Errorf("cache: got issuer %q, client %q", c.Issuer, c.ClientID)
	}
}

// --audience is sent as the audience parameter, and only when given
// (Keycloak takes its audience from a mapper).
func TestAuthLoginAudience(t *testing.T) {
	t.Parallel()
	// A proxy in front of the provider, named as its issuer, sees what
	// the CLI sends.
	proxy := httptest.NewUnstartedServer(nil)
	p := startOIDC(t, oidcdev.Options{Issuer: "http://" + proxy.Listener.Addr().String()})
	var (
		mu        sync.Mutex
		audiences []string
	)
	forward := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: p.Addr()})
	proxy.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/device_authorization" {
			r.ParseForm()
			mu.Lock()
			audiences = append(audiences, strings.Join(r.PostForm["audience"], ","))
			mu.Unlock()
			r.Body = io.NopCloser(strings.NewReader(r.PostForm.Encode()))
			r.ContentLength = -1
		}
		forward.ServeHTTP(w, r)
	})
	proxy.Start()
	t.Cleanup(proxy.Close)

	env := environ{"XDG_CONFIG_HOME": t.TempDir()}
	for _, args := range [][]string{{"--issuer", p.Issuer()}, {"--issuer", p.Issuer(), "--audience", "attestation"}} {
		if r := login(t, p, env, "alice", args...); r.code != 0 {
			t.Fatalf("auth login %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "attestation"}; strings.Join(audiences, "|") != strings.Join(want, "|") {
		t.Errorf("audience parameters sent: got %q, want %q (none without --audience)", audiences, want)
	}
}

// A daemon whose OIDC issuer is down answers unavailable; the CLI says
// the daemon is, not that it cannot reach it.
func TestAuthIssuerDown(t *testing.T) {
	t.Parallel()
	p := startOIDC(t, oidcdev.Options{})
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.OIDCIssuer = closedURL(t) }})
	env := loggedIn(t, p, "alice", d.URL)
	r := runCLI(t, env, "machines", "list")
	wantLoginError(t, r, "attestation: the daemon at "+d.URL+" is unavailable: ")
	if strings.Contains(r.stderr, "cannot reach") {
		t.Errorf("stderr %q: the daemon was reached", r.stderr)
	}
}
