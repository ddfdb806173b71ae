package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDCConfig says which OIDC access tokens an OIDC authenticator accepts
// and how it reads their roles.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, as its tokens' "iss" says
	// (Keycloak: https://HOST/realms/REALM).
	Issuer string
	// Audience must be in a token's "aud", or be its "azp".
	Audience string
	// RoleClaims are the claims roles are read from, as dotted paths into
	// the token's JSON (realm_access.roles); each names a string or a
	// list of strings. Empty: DefaultRoleClaims(Audience).
	RoleClaims []string
	// RoleMap maps claim values to roles ("/ops" to operator). A value
	// that is a role's name is that role without an entry.
	RoleMap map[string]Role
	// Skew is the clock skew allowed on exp and nbf (0: DefaultSkew).
	Skew time.Duration
	// Client fetches discovery and keys (nil: a client with a 10 s
	// timeout).
	Client *http.Client
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultSkew is the clock skew allowed on a token's exp and nbf.
const DefaultSkew = time.Minute

// keyRefetchInterval is the least time between two fetches of the
// issuer's keys that a token with an unknown key ID causes, so that
// forged tokens cannot make the daemon hammer the issuer.
const keyRefetchInterval = 10 * time.Second

// DefaultRoleClaims are where Keycloak puts roles: realm roles, the
// audience client's roles, and groups.
func DefaultRoleClaims(audience string) []string {
	return []string{"realm_access.roles", "resource_access." + audience + ".roles", "groups"}
}

// signingAlgs are the signature algorithms accepted.
var signingAlgs = []string{oidc.RS256, oidc.ES256}

// OIDC accepts access tokens (JWTs) of one OIDC issuer. Discovery is
// lazy: a daemon whose issuer is down starts, and calls that carry a
// token are answered unavailable until the issuer is reachable.
type OIDC struct {
	cfg OIDCConfig

	mu           sync.Mutex
	verifier     *oidc.IDTokenVerifier
	lastDiscover time.Time
	discoverErr  error
}

// NewOIDC returns an authenticator for cfg. It tries discovery once, and
// logs rather than fails when the issuer cannot be reached.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("oidc: no issuer")
	}
	if cfg.Audience == "" {
		return nil, errors.New("oidc: no audience")
	}
	if len(cfg.RoleClaims) == 0 {
		cfg.RoleClaims = DefaultRoleClaims(cfg.Audience)
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &OIDC{cfg: cfg}
	if _, err := o.verifierFor(ctx); err != nil {
		cfg.Logger.Warn("OIDC issuer unreachable: operators' OIDC tokens are refused until it answers", "issuer", cfg.Issuer, "err", err)
	} else {
		cfg.Logger.Info("OIDC issuer", "issuer", cfg.Issuer, "audience", cfg.Audience, "role_claims", strings.Join(cfg.RoleClaims, ","))
	}
	return o, nil
}

// verifierFor returns the verifier, running discovery when it has not
// succeeded yet (at most once per keyRefetchInterval).
func (o *OIDC) verifierFor(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	if now := o.cfg.Now(); o.discoverErr != nil && now.Sub(o.lastDiscover) < keyRefetchInterval {
		return nil, o.discoverErr
	}
	o.lastDiscover = o.cfg.Now()
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), o.cfg.Client), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	if err != nil {
		o.discoverErr = &UnavailableError{fmt.Errorf("OIDC issuer %s: discovery: %w", o.cfg.Issuer, err)}
		return nil, o.discoverErr
	}
	var meta struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKS == "" {
		o.discoverErr = &UnavailableError{fmt.Errorf("OIDC issuer %s: its discovery document has no jwks_uri", o.cfg.Issuer)}
		return nil, o.discoverErr
	}
	keys := &keySet{url: meta.JWKS, client: o.cfg.Client, now: o.cfg.Now, log: o.cfg.Logger}
	o.verifier = oidc.NewVerifier(o.cfg.Issuer, keys, &oidc.Config{
		SkipClientIDCheck:    true, // aud or azp: checked below
		SupportedSigningAlgs: signingAlgs,
		Now:                  func() time.Time { return o.cfg.Now().Add(-o.cfg.Skew) },
	})
	o.discoverErr = nil
	return o.verifier, nil
}

// accessClaims are the claims read from an access token.
type accessClaims struct {
	Subject           string       `json:"sub"`
	AuthorizedParty   string       `json:"azp"`
	NotBefore         *json.Number `json:"nbf"`
	Type              string       `json:"typ"`
	PreferredUsername string       `json:"preferred_username"`
	Name              string       `json:"name"`
	Email             string       `json:"email"`
}

// Authenticate implements Authenticator. A bearer token that is not a
// JWT is not this authenticator's: ErrBadCredentials.
func (o *OIDC) Authenticate(ctx context.Context, h http.Header) (*Principal, error) {
	tok, ok := BearerToken(h)
	if !ok {
		return nil, ErrNoCredentials
	}
	if strings.Count(tok, ".") != 2 {
		return nil, ErrBadCredentials
	}
	v, err := o.verifierFor(ctx)
	if err != nil {
		return nil, err
	}
	t, err := v.Verify(oidc.ClientContext(ctx, o.cfg.Client), tok)
	if err != nil {
		return nil, o.refusal(err)
	}
	var c accessClaims
	if err := t.Claims(&c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrBadCredentials, err)
	}
	if !slices.Contains(t.Audience, o.cfg.Audience) && c.AuthorizedParty != o.cfg.Audience {
		return nil, fmt.Errorf("%w: token is for audience %q (azp %q), not %q: the provider must add %q to the audience (Keycloak: an audience mapper)",
			ErrBadCredentials, t.Audience, c.AuthorizedParty, o.cfg.Audience, o.cfg.Audience)
	}
	if c.NotBefore != nil {
		if nbf, err := c.NotBefore.Int64(); err == nil && time.Unix(nbf, 0).After(o.cfg.Now().Add(o.cfg.Skew)) {
			return nil, fmt.Errorf("%w: token not valid before %s", ErrBadCredentials, time.Unix(nbf, 0).UTC().Format(time.RFC3339))
		}
	}
	if c.Type != "" && !strings.EqualFold(c.Type, "Bearer") && !strings.EqualFold(c.Type, "at+jwt") {
		return nil, fmt.Errorf("%w: a %q token, not an access token", ErrBadCredentials, c.Type)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: token has no subject", ErrBadCredentials)
	}
	var all map[string]any
	if err := t.Claims(&all); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrBadCredentials, err)
	}
	name := c.Subject
	for _, n := range []string{c.PreferredUsername, c.Name, c.Email} {
		if n != "" {
			name = n
			break
		}
	}
	return &Principal{Subject: c.Subject, Name: name, Roles: o.roles(all)}, nil
}

// refusal words a verification error for the caller.
func (o *OIDC) refusal(err error) error {
	var expired *oidc.TokenExpiredError
	var u *UnavailableError
	switch {
	case errors.As(err, &u):
		return err
	case errors.As(err, &expired):
		return fmt.Errorf("%w: token expired at %s: log in again (attestation auth login)", ErrBadCredentials, expired.Expiry.UTC().Format(time.RFC3339))
	case strings.Contains(err.Error(), "issued by a different provider"):
		return fmt.Errorf("%w: token is not from the issuer %s", ErrBadCredentials, o.cfg.Issuer)
	}
	return fmt.Errorf("%w: %v", ErrBadCredentials, strings.TrimPrefix(err.Error(), "oidc: "))
}

// roles reads the roles from claims, by RoleClaims and RoleMap.
func (o *OIDC) roles(claims map[string]any) []Role {
	var out []Role
	add := func(v string) {
		r, ok := o.cfg.RoleMap[v]
		if !ok {
			r = Role(v)
		}
		if r.rank() > 0 && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, path := range o.cfg.RoleClaims {
		switch v := claimAt(claims, path).(type) {
		case string:
			add(v)
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					add(s)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Role) int { return a.rank() - b.rank() })
	return out
}

// claimAt follows a dotted path into claims; nil when it leads nowhere.
func claimAt(claims map[string]any, path string) any {
	var v any = claims
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
