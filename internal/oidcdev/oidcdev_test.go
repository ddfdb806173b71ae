package oidcdev_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/attestation/attestation/internal/oidcdev"
)

var testUsers = []oidcdev.User{
	{Username: "alice", Name: "Alice Operator", Email: "alice@example.org", Roles: []string{"operator"}, Groups: []string{"/ops"}},
	{Username: "bob", Roles: []string{"viewer"}},
}

// start runs a provider for the test, with one-second polls.
func start(t *testing.T, o oidcdev.Options) *oidcdev.Provider {
	t.Helper()
	if o.Users == nil {
		o.Users = testUsers
	}
	o.PollInterval = time.Second
	p, err := oidcdev.Start(o)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// client is what a command line knows of a provider: its discovery and
// an oauth2 config for the public client.
type client struct {
	provider *oidc.Provider
	config   oauth2.Config
	// revocation is the revocation_endpoint of the discovery document.
	revocation string
}

func discover(t *testing.T, p *oidcdev.Provider) client {
	t.Helper()
	prov, err := oidc.NewProvider(context.Background(), p.Issuer())
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var extra struct {
		Revocation string `json:"revocation_endpoint"`
	}
	if err := prov.Claims(&extra); err != nil {
		t.Fatalf("discovery claims: %v", err)
	}
	ep := prov.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInParams
	if ep.DeviceAuthURL == "" || ep.TokenURL == "" || extra.Revocation == "" {
		t.Fatalf("discovery: got endpoint %+v, revocation %q; want device, token and revocation endpoints", ep, extra.Revocation)
	}
	return client{
		provider:   prov,
		config:     oauth2.Config{ClientID: p.ClientID(), Endpoint: ep, Scopes: []string{oidc.ScopeOpenID, "profile"}},
		revocation: extra.Revocation,
	}
}

// login runs the device grant, approving it as username from the side
// while the client polls.
func (c client) login(t *testing.T, p *oidcdev.Provider, username string) *oauth2.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	da, err := c.config.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	approved := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond) // a poll or two sees authorization_pending
		approved <- p.Approve(strings.ToLower(da.UserCode), username)
	}()
	tok, err := c.config.DeviceAccessToken(ctx, da)
	if err := <-approved; err != nil {
		t.Fatalf("approve: %v", err)
	}
	if err != nil {
		t.Fatalf("device access token: %v", err)
	}
	return tok
}

// verify checks tok as a daemon would, against the provider's keys, for
// the audience attestation, and returns its claims.
func (c client) verify(t *testing.T, tok string) map[string]any {
	t.Helper()
	idt, err := c.provider.Verifier(&oidc.Config{ClientID: oidcdev.DefaultAudience}).Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("verify access token: %v", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		t.Fatalf("claims: %v", err)
	}
	return claims
}

func TestDeviceLogin(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{AccessTokenLifetime: time.Minute})
	c := discover(t, p)
	if !strings.HasPrefix(c.provider.Endpoint().DeviceAuthURL, p.Issuer()) {
		t.Errorf("device endpoint %q is not under the issuer %s", c.provider.Endpoint().DeviceAuthURL, p.Issuer())
	}
	tok := c.login(t, p, "alice")
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" {
		t.Errorf("got refresh token %q, type %q; want a refresh token and Bearer", tok.RefreshToken, tok.TokenType)
	}
	if left := time.Until(tok.Expiry); left < 50*time.Second || left > time.Minute+time.Second {
		t.Errorf("token expires in %s, want about a minute", left)
	}

	claims := c.verify(t, tok.AccessToken)
	header := jwtHeader(t, tok.AccessToken)
	if header["alg"] != "RS256" || header["kid"] == "" {
		t.Errorf("JWT header %v: want alg RS256 and a kid", header)
	}
	want := map[string]any{
		"iss":                p.Issuer(),
		"sub":                oidcdev.SubjectOf("alice"),
		"azp":                "attestation-cli",
		"client_id":          "attestation-cli",
		"preferred_username": "alice",
		"name":               "Alice Operator",
		"email":              "alice@example.org",
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s: got %v, want %v", k, claims[k], v)
		}
	}
	if aud := strings.Join(strs(claims["aud"]), " "); aud != "attestation attestation-cli" {
		t.Errorf("aud: got %q, want attestation and the client", aud)
	}
	realm, _ := claims["realm_access"].(map[string]any)
	if got := strs(realm["roles"]); !slices.Equal(got, []string{"operator"}) {
		t.Errorf("realm_access.roles: got %v, want [operator]", got)
	}
	if got := strs(claims["groups"]); !slices.Equal(got, []string{"/ops"}) {
		t.Errorf("groups: got %v, want [/ops]", got)
	}
	for _, k := range []string{"exp", "iat", "nbf", "jti"} {
		if claims[k] == nil {
			t.Errorf("no claim %s", k)
		}
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat < 55 || exp-iat > 61 {
		t.Errorf("exp - iat = %v s, want the minute of AccessTokenLifetime", exp-iat)
	}

	t.Run("userinfo", func(t *testing.T) {
		info, err := c.provider.UserInfo(context.Background(), oauth2.StaticTokenSource(tok))
		if err != nil {
			t.Fatalf("userinfo: %v", err)
		}
		var extra struct {
			PreferredUsername string `json:"preferred_username"`
			Name              string `json:"name"`
		}
		info.Claims(&extra)
		if info.Subject != oidcdev.SubjectOf("alice") || extra.PreferredUsername != "alice" || extra.Name != "Alice Operator" {
			t.Errorf("userinfo: got sub %q, %+v; want alice's", info.Subject, extra)
		}
	})

}

func TestDeny(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{})
	c := discover(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	da, err := c.config.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if err := p.Deny(da.UserCode); err != nil {
		t.Fatalf("deny: %v", err)
	}
	_, err = c.config.DeviceAccessToken(ctx, da)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "access_denied" {
		t.Fatalf("got %v, want access_denied", err)
	}
	if err := p.Approve(da.UserCode, "alice"); err == nil {
		t.Errorf("approve after deny: got nil, want an error")
	}
	if err := p.Approve("nope", "alice"); err == nil || !strings.Contains(err.Error(), "no login is waiting") {
		t.Errorf("approve of an unknown code: got %v", err)
	}
}

// refresh exchanges a refresh token for new tokens.
func (c client) refresh(refreshToken string) (*oauth2.Token, error) {
	return c.config.TokenSource(context.Background(), &oauth2.Token{RefreshToken: refreshToken}).Token()
}

func TestRefreshAndRevocation(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{AccessTokenLifetime: 2 * time.Second})
	c := discover(t, p)
	tok := c.login(t, p, "bob")

	time.Sleep(2100 * time.Millisecond)
	_, err := c.provider.Verifier(&oidc.Config{ClientID: oidcdev.DefaultAudience}).Verify(context.Background(), tok.AccessToken)
	var expired *oidc.TokenExpiredError
	if !errors.As(err, &expired) {
		t.Fatalf("verify after the lifetime: got %v, want TokenExpiredError", err)
	}

	next, err := c.refresh(tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if next.AccessToken == tok.AccessToken || next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: want a new access token and a new (rotated) refresh token")
	}
	if claims := c.verify(t, next.AccessToken); claims["preferred_username"] != "bob" {
		t.Errorf("refreshed token: preferred_username %v, want bob", claims["preferred_username"])
	}
	if _, err := c.refresh(tok.RefreshToken); !isInvalidGrant(err) {
		t.Errorf("refresh with the rotated-out token: got %v, want invalid_grant", err)
	}

	// RFC 7009, as a public client: the token, a hint, the client ID.
	resp, err := http.PostForm(c.revocation, url.Values{
		"token": {next.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {p.ClientID()},
	})
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: got %s %s, want 200", resp.Status, body)
	}
	if _, err := c.refresh(next.RefreshToken); !isInvalidGrant(err) {
		t.Errorf("refresh with a revoked token: got %v, want invalid_grant", err)
	}
}

func TestEndSessions(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{})
	c := discover(t, p)
	tok := c.login(t, p, "alice")
	if n := p.EndSessions("alice"); n != 1 {
		t.Errorf("EndSessions: got %d, want 1", n)
	}
	if _, err := c.refresh(tok.RefreshToken); !isInvalidGrant(err) {
		t.Errorf("refresh after EndSessions: got %v, want invalid_grant", err)
	}
}

func isInvalidGrant(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_grant"
}

func TestToken(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{})
	c := discover(t, p)
	verifier := c.provider.Verifier(&oidc.Config{ClientID: oidcdev.DefaultAudience})
	ctx := context.Background()

	tok, err := p.Token("bob")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	claims := c.verify(t, tok)
	if claims["sub"] != oidcdev.SubjectOf("bob") || claims["name"] != "bob" || claims["azp"] != "attestation-cli" {
		t.Errorf("Token claims: got %v", claims)
	}

	tests := []struct {
		name string
		o    oidcdev.TokenOptions
		// wantErr is part of the verifier's error; "" means it verifies.
		wantErr string
		check   func(t *testing.T, claims map[string]any)
	}{
		{name: "expired", o: oidcdev.TokenOptions{Lifetime: -time.Minute}, wantErr: "expired"},
		{name: "other audience", o: oidcdev.TokenOptions{Audience: []string{"account"}}, wantErr: "audience"},
		{
			name: "client roles",
			o: oidcdev.TokenOptions{Claims: map[string]any{
				"resource_access": map[string]any{"attestation": map[string]any{"roles": []string{"admin"}}},
				"groups":          []string{"/platform"},
			}},
			check: func(t *testing.T, claims map[string]any) {
				ra := claims["resource_access"].(map[string]any)["attestation"].(map[string]any)
				if got := strs(ra["roles"]); !slices.Equal(got, []string{"admin"}) {
					t.Errorf("resource_access.attestation.roles: got %v", got)
				}
				if got := strs(claims["groups"]); !slices.Equal(got, []string{"/platform"}) {
					t.Errorf("groups: got %v, want the replacement", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := p.TokenWith("alice", tt.o)
			if err != nil {
				t.Fatalf("TokenWith: %v", err)
			}
			idt, err := verifier.Verify(ctx, tok)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("verify: got %v, want an error about %s", err, tt.wantErr)
				}
				return
			}
			var claims map[string]any
			idt.Claims(&claims)
			tt.check(t, claims)
		})
	}

	if _, err := p.Token("mallory"); err == nil {
		t.Errorf("Token of an unknown user: got nil, want an error")
	}
}

func TestDevicePage(t *testing.T) {
	t.Parallel()
	p := start(t, oidcdev.Options{})
	c := discover(t, p)
	da, err := c.config.DeviceAuth(context.Background())
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if da.VerificationURI != p.DeviceURL() || !strings.HasPrefix(da.VerificationURIComplete, p.DeviceURL()+"?user_code=") {
		t.Errorf("verification URIs %q, %q: want the page %s", da.VerificationURI, da.VerificationURIComplete, p.DeviceURL())
	}

	resp, err := http.Get(da.VerificationURIComplete)
	if err != nil {
		t.Fatalf("GET %s: %v", da.VerificationURIComplete, err)
	}
	page := readAll(t, resp)
	for _, want := range []string{`value="` + da.UserCode + `"`, `<option value="alice">`, "Alice Operator (operator)", `<option value="bob">`} {
		if !strings.Contains(page, want) {
			t.Errorf("page: missing %q in\n%s", want, page)
		}
	}

	resp, err = http.PostForm(p.DeviceURL(), url.Values{"user_code": {"ZZZZ-ZZZZ"}, "username": {"alice"}, "action": {"approve"}})
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "no login is waiting") {
		t.Errorf("approve of an unknown code: got %s, want 400 saying so", resp.Status)
	}

	resp, err = http.PostForm(p.DeviceURL(), url.Values{"user_code": {da.UserCode}, "username": {"bob"}, "action": {"approve"}})
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(page, "logged in as bob") {
		t.Fatalf("approve: got %s\n%s", resp.Status, page)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.config.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("device access token: %v", err)
	}
	if claims := c.verify(t, tok.AccessToken); claims["preferred_username"] != "bob" {
		t.Errorf("got a token of %v, want bob's", claims["preferred_username"])
	}
	if _, err := c.config.DeviceAccessToken(ctx, da); err == nil {
		t.Errorf("second use of the device code: got tokens, want an error (the code is spent)")
	}
}

func TestParseUser(t *testing.T) {
	tests := []struct {
		in      string
		want    oidcdev.User
		wantErr bool
	}{
		{in: "alice:operator", want: oidcdev.User{Username: "alice", Roles: []string{"operator"}}},
		{in: "carol:viewer, operator", want: oidcdev.User{Username: "carol", Roles: []string{"viewer", "operator"}}},
		{in: "dave", want: oidcdev.User{Username: "dave"}},
		{in: ":admin", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := oidcdev.ParseUser(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseUser(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got.Username != tt.want.Username || !slices.Equal(got.Roles, tt.want.Roles) {
			t.Errorf("ParseUser(%q): got %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []oidcdev.Options{
		{Users: []oidcdev.User{{Username: "a"}, {Username: "a"}}},
		{Users: []oidcdev.User{{Name: "nameless"}}},
		{Addr: "256.0.0.1:0"},
	} {
		if p, err := oidcdev.New(o); err == nil {
			p.Close()
			t.Errorf("New(%+v): got nil, want an error", o)
		}
	}
}

// The command prints where the provider is and how to use it, and stops
// when its context ends.
func TestCommand(t *testing.T) {
	t.Parallel()
	cmd := oidcdev.Command()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--user", "carol:viewer,operator"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{"OIDC provider (development) at http://127.0.0.1:", "user carol", "viewer,operator",
		"attestationd --oidc-issuer http://127.0.0.1:", "attestation auth login --issuer http://127.0.0.1:", "/device"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output: missing %q in\n%s", want, out.String())
		}
	}
}

func jwtHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	return h
}

// strs is a JSON array of strings as []string.
func strs(v any) []string {
	var out []string
	switch x := v.(type) {
	case []any:
		for _, s := range x {
			str, _ := s.(string)
			out = append(out, str)
		}
	case []string:
		out = x
	case string:
		out = []string{x}
	}
	return out
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
