package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/auth/authtest"
)

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newOIDC(t *testing.T, iss *authtest.Issuer, edit func(*auth.OIDCConfig)) (*auth.OIDC, *clock) {
	t.Helper()
	clk := &clock{t: time.Now()}
	cfg := auth.OIDCConfig{Issuer: iss.URL, Audience: authtest.Audience, Now: clk.now}
	if edit != nil {
		edit(&cfg)
	}
	o, err := auth.NewOIDC(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o, clk
}

func TestOIDCTokens(t *testing.T) {
	iss := authtest.Start(t)
	other := authtest.Start(t)
	o, _ := newOIDC(t, iss, nil)
	now := time.Now()
	with := func(edit func(authtest.Claims)) authtest.Claims {
		c := iss.Claims("alice", "operator")
		edit(c)
		return c
	}
	cases := []struct {
		name  string
		token string
		want  string // "" accepts; else a word of the error
	}{
		{"valid", iss.Token(t, iss.Claims("alice", "operator")), ""},
		{"azp is the audience", iss.Token(t, with(func(c authtest.Claims) { c["aud"] = "account"; c["azp"] = authtest.Audience })), ""},
		{"expired within the skew", iss.Token(t, with(func(c authtest.Claims) { c["exp"] = now.Add(-30 * time.Second).Unix() })), ""},
		{"expired", iss.Token(t, with(func(c authtest.Claims) { c["exp"] = now.Add(-2 * time.Minute).Unix() })), "expired"},
		{"not yet valid", iss.Token(t, with(func(c authtest.Claims) { c["nbf"] = now.Add(2 * time.Minute).Unix() })), "not valid before"},
		{"wrong signature", iss.Forged(t, iss.Claims("alice", "operator")), "signature"},
		{"another issuer's token", other.Token(t, with(func(c authtest.Claims) { c["iss"] = other.URL })), "signature"},
		{"wrong issuer signed by ours", iss.Token(t, with(func(c authtest.Claims) { c["iss"] = other.URL })), "not from the issuer"},
		{"wrong audience", iss.Token(t, with(func(c authtest.Claims) { c["aud"] = "account"; c["azp"] = "other" })), "audience"},
		{"an ID token", iss.Token(t, with(func(c authtest.Claims) { c["typ"] = "ID" })), "not an access token"},
		{"no subject", iss.Token(t, with(func(c authtest.Claims) { delete(c, "sub") })), "subject"},
		{"HS256", hs256(t, iss.Claims("alice", "admin")), "malformed"},
		{"not a JWT", "opaque-token", "invalid bearer token"},
		{"garbage JWT", "a.b.c", "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := o.Authenticate(t.Context(), header("Bearer "+c.token))
			if c.want == "" {
				if err != nil {
					t.Fatalf("got %v, want the token accepted", err)
				}
				if p.Subject != "alice" || p.Name != "alice" || !slices.Equal(p.Roles, []auth.Role{auth.Operator}) {
					t.Errorf("got %+v, want alice, operator", p)
				}
				return
			}
			if !errors.Is(err, auth.ErrBadCredentials) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, %v; want an invalid bearer token error saying %q", p, err, c.want)
			}
		})
	}
	if _, err := o.Authenticate(t.Context(), header("")); !errors.Is(err, auth.ErrNoCredentials) {
		t.Errorf("no header: got %v, want ErrNoCredentials", err)
	}
}

// hs256 signs claims with HMAC, which the daemon must not accept.
func hs256(t *testing.T, c authtest.Claims) string {
	return authtest.Sign(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "key-1", Algorithm: string(jose.HS256)}, c)
}

func TestOIDCRoles(t *testing.T) {
	iss := authtest.Start(t)
	o, _ := newOIDC(t, iss, func(c *auth.OIDCConfig) {
		c.RoleMap = map[string]auth.Role{"/ops": auth.Operator, "attestation-admins": auth.Admin}
	})
	cases := []struct {
		name   string
		claims func(authtest.Claims)
		want   []auth.Role
	}{
		{"realm roles", func(c authtest.Claims) {
			c["realm_access"] = map[string]any{"roles": []string{"offline_access", "viewer", "operator"}}
		}, []auth.Role{auth.Viewer, auth.Operator}},
		{"client roles", func(c authtest.Claims) {
			c["resource_access"] = map[string]any{"attestation": map[string]any{"roles": []string{"admin"}}, "other": map[string]any{"roles": []string{"operator"}}}
		}, []auth.Role{auth.Admin}},
		{"mapped groups", func(c authtest.Claims) { c["groups"] = []string{"/ops", "/unrelated"} }, []auth.Role{auth.Operator}},
		{"mapped realm role", func(c authtest.Claims) {
			c["realm_access"] = map[string]any{"roles": []string{"attestation-admins"}}
		}, []auth.Role{auth.Admin}},
		{"none", func(c authtest.Claims) {}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims := iss.Claims("bob")
			c.claims(claims)
			p, err := o.Authenticate(t.Context(), header("Bearer "+iss.Token(t, claims)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Roles, c.want) {
				t.Errorf("got roles %v, want %v", p.Roles, c.want)
			}
		})
	}
	t.Run("other claim", func(t *testing.T) {
		o, _ := newOIDC(t, iss, func(c *auth.OIDCConfig) { c.RoleClaims = []string{"attestation.role"} })
		claims := iss.Claims("carol", "admin")
		claims["attestation"] = map[string]any{"role": "viewer"}
		p, err := o.Authenticate(t.Context(), header("Bearer "+iss.Token(t, claims)))
		if err != nil || !slices.Equal(p.Roles, []auth.Role{auth.Viewer}) {
			t.Errorf("got %+v, %v, want viewer alone (realm roles not read)", p, err)
		}
	})
}

// TestOIDCKeyRotation proves that a token signed with a new key is
// accepted once the issuer publishes it, and that tokens naming unknown
// keys make the daemon fetch the key set at most once per interval.
func TestOIDCKeyRotation(t *testing.T) {
	iss := authtest.Start(t)
	o, clk := newOIDC(t, iss, nil)
	accept := func(tok string) error {
		_, err := o.Authenticate(t.Context(), header("Bearer "+tok))
		return err
	}
	if err := accept(iss.Token(t, iss.Claims("alice", "viewer"))); err != nil {
		t.Fatal(err)
	}
	before := iss.Fetches()
	clk.add(time.Minute)
	iss.Rotate(t, jose.ES256)
	if err := accept(iss.Token(t, iss.Claims("alice", "viewer"))); err != nil {
		t.Fatalf("after rotating to an ES256 key: %v", err)
	}
	if got := iss.Fetches() - before; got != 1 {
		t.Errorf("rotation: %d fetches of the key set, want 1", got)
	}

	// Tokens under key IDs the issuer never published.
	before = iss.Fetches()
	clk.add(time.Minute)
	stranger := authtest.NewKey(t, jose.RS256, "unknown")
	for range 50 {
		err := accept(authtest.Sign(t, stranger, iss.Claims("mallory", "admin")))
		if !errors.Is(err, auth.ErrBadCredentials) {
			t.Fatalf("unknown key: got %v, want refused", err)
		}
	}
	if got := iss.Fetches() - before; got > 1 {
		t.Errorf("50 tokens under an unknown key: %d fetches of the key set, want at most 1", got)
	}
}

// TestOIDCIssuerDown: a daemon starts while its issuer is down; tokens
// are answered unavailable, and accepted once the issuer answers.
func TestOIDCIssuerDown(t *testing.T) {
	iss := authtest.Start(t)
	target, _ := url.Parse(iss.URL)
	var up atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	clk := &clock{t: time.Now()}
	o, err := auth.NewOIDC(context.Background(), auth.OIDCConfig{Issuer: iss.URL, Audience: authtest.Audience, Now: clk.now,
		Client: &http.Client{Transport: rewrite{to: front.URL}}})
	if err != nil {
		t.Fatalf("issuer down at start: %v, want the authenticator anyway", err)
	}
	tok := iss.Token(t, iss.Claims("alice", "viewer"))
	_, err = o.Authenticate(t.Context(), header("Bearer "+tok))
	var u *auth.UnavailableError
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "discovery") {
		t.Fatalf("issuer down: got %v, want unavailable naming discovery", err)
	}
	up.Store(true)
	clk.add(time.Minute)
	if _, err := o.Authenticate(t.Context(), header("Bearer "+tok)); err != nil {
		t.Fatalf("issuer up again: %v", err)
	}
}

// rewrite sends every request to another server.
type rewrite struct{ to string }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	u, _ := url.Parse(r.to)
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	return http.DefaultTransport.RoundTrip(req)
}
