// Package oidcdev is an OpenID Connect provider for development and
// tests, built on zitadel/oidc's op: discovery, JWKS, the token endpoint,
// the device authorization grant (RFC 8628) with refresh tokens, token
// revocation (RFC 7009) and userinfo, served over HTTP on a loopback
// listener. Its one client is public (attestation-cli by default); its
// access tokens are RS256 JWTs shaped like Keycloak's: the audience in
// aud, the client in azp, the profile in preferred_username and name,
// realm roles in realm_access.roles, and groups.
//
// Users are given by the caller. Nobody signs in: a device login is
// approved for a user, by a test with Approve or by a person on the page
// at /device, which lets anyone who reaches it log in as anyone. It is
// for loopback use only.
package oidcdev

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/pkg/crypto"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Defaults of Options.
const (
	DefaultAddr                 = "127.0.0.1:0"
	DefaultClientID             = "attestation-cli"
	DefaultAudience             = "attestation"
	DefaultAccessTokenLifetime  = 5 * time.Minute
	DefaultRefreshTokenLifetime = 8 * time.Hour
	DefaultDeviceCodeLifetime   = 10 * time.Minute
	DefaultPollInterval         = 5 * time.Second
)

// DevicePath is the page where a person approves a device login.
const DevicePath = "/device"

// User is someone who can log in.
type User struct {
	// Username is the login name, the tokens' preferred_username.
	Username string
	// Name is the display name (default: Username).
	Name string
	// Email, when set, is the tokens' email.
	Email string
	// Roles are the realm roles, in realm_access.roles.
	Roles []string
	// Groups are in the groups claim.
	Groups []string
	// Subject is the tokens' sub (default: a UUID derived from Username,
	// the same on every start).
	Subject string
}

// SubjectOf is the subject a user called username gets when none is given.
func SubjectOf(username string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte("attestation-oidc-dev/"+username)).String()
}

// Options configure a provider; the zero value of each field is its
// default.
type Options struct {
	// Addr is the TCP address to listen on (DefaultAddr: a free loopback
	// port).
	Addr string
	// Issuer is the issuer URL (default: http:// and the address listened
	// on). Set it when clients reach the provider by another name.
	Issuer   string
	ClientID string
	// Audience is put in every access token's aud.
	Audience string
	Users    []User
	// AccessTokenLifetime is how long access tokens last; tests make
	// tokens that expire in a second or two.
	AccessTokenLifetime  time.Duration
	RefreshTokenLifetime time.Duration
	// DeviceCodeLifetime is how long a device login waits for approval.
	DeviceCodeLifetime time.Duration
	// PollInterval is how often clients are told to poll the token
	// endpoint during a device login, in whole seconds (at least 1).
	PollInterval time.Duration
	// Logger receives a line per approval, denial and revocation (nil:
	// none).
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.Audience == "" {
		o.Audience = DefaultAudience
	}
	if o.AccessTokenLifetime <= 0 {
		o.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if o.RefreshTokenLifetime <= 0 {
		o.RefreshTokenLifetime = DefaultRefreshTokenLifetime
	}
	if o.DeviceCodeLifetime <= 0 {
		o.DeviceCodeLifetime = DefaultDeviceCodeLifetime
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	o.PollInterval = max(o.PollInterval.Round(time.Second), time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// The users get their defaults in a copy: the caller's slice is
	// theirs, and may be shared by other providers.
	o.Users = slices.Clone(o.Users)
	seen := make(map[string]bool)
	for i := range o.Users {
		u := &o.Users[i]
		if u.Username == "" {
			return errors.New("a user has no username")
		}
		if seen[u.Username] {
			return fmt.Errorf("user %q is given twice", u.Username)
		}
		seen[u.Username] = true
		if u.Name == "" {
			u.Name = u.Username
		}
		if u.Subject == "" {
			u.Subject = SubjectOf(u.Username)
		}
	}
	return nil
}

// Provider is a running OIDC provider.
type Provider struct {
	opts    Options
	issuer  string
	ln      net.Listener
	srv     *http.Server
	storage *storage

	// done is closed when the Run that Start began returns.
	done chan struct{}
	once sync.Once
}

// New listens on o.Addr and builds the provider; Run serves it.
func New(o Options) (*Provider, error) {
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("OIDC provider: %w", err)
	}
	st, err := newStorage(&client{id: o.ClientID}, o.Audience, o.Users, o.AccessTokenLifetime, o.RefreshTokenLifetime)
	if err != nil {
		return nil, fmt.Errorf("OIDC provider: %w", err)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("OIDC provider: listen on %s: %w", o.Addr, err)
	}
	issuer := strings.TrimRight(o.Issuer, "/")
	if issuer == "" {
		issuer = "http://" + ln.Addr().String()
	}
	var key [32]byte
	rand.Read(key[:])
	cfg := &op.Config{
		CryptoKey:             key,
		GrantTypeRefreshToken: true,
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     o.DeviceCodeLifetime,
			PollInterval: o.PollInterval,
			UserFormPath: DevicePath,
			UserCode:     op.UserCodeBase20,
		},
	}
	provider, err := op.NewProvider(cfg, st, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("OIDC provider %s: %w", issuer, err)
	}
	p := &Provider{opts: o, issuer: issuer, ln: ln, storage: st}
	mux := http.NewServeMux()
	mux.Handle(DevicePath, &devicePage{p: p})
	mux.Handle("/", provider)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return p, nil
}

// Start is New, then Run until Close.
func Start(o Options) (*Provider, error) {
	p, err := New(o)
	if err != nil {
		return nil, err
	}
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		if err := p.Run(context.Background()); err != nil {
			p.opts.Logger.Error("OIDC provider stopped", "issuer", p.issuer, "err", err)
		}
	}()
	return p, nil
}

// Run serves the provider until ctx is done or Close is called, and
// then returns nil.
func (p *Provider) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(p.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve OIDC provider %s: %w", p.issuer, err)
	}
}

// Close stops the provider at once.
func (p *Provider) Close() error {
	p.once.Do(func() {
		p.srv.Close()
		p.ln.Close()
		if p.done != nil {
			<-p.done
		}
	})
	return nil
}

// Issuer is the provider's issuer URL; discovery is at
// Issuer()+"/.well-known/openid-configuration".
func (p *Provider) Issuer() string { return p.issuer }

// Addr is the address the provider listens on, HOST:PORT; it differs
// from the issuer's when Options.Issuer names a proxy in front.
func (p *Provider) Addr() string { return p.ln.Addr().String() }

// ClientID is the ID of the provider's public client.
func (p *Provider) ClientID() string { return p.opts.ClientID }

// Audience is the audience of the provider's access tokens.
func (p *Provider) Audience() string { return p.opts.Audience }

// DeviceURL is the page where a person approves a device login.
func (p *Provider) DeviceURL() string { return p.issuer + DevicePath }

// Users are the users who can log in, defaults filled in.
func (p *Provider) Users() []User {
	users := make([]User, len(p.opts.Users))
	copy(users, p.opts.Users)
	return users
}

// User returns the user called username.
func (p *Provider) User(username string) (User, bool) {
	return p.storage.userByName(username)
}

// Approve completes the device login waiting for userCode (in any case,
// with or without its dash) as the user called username: the client's
// next poll gets its tokens.
func (p *Provider) Approve(userCode, username string) error {
	u, ok := p.storage.userByName(username)
	if !ok {
		return fmt.Errorf("approve %s: no user %q", userCode, username)
	}
	if err := p.storage.decide(userCode, u.Subject, true); err != nil {
		return fmt.Errorf("approve: %w", err)
	}
	p.opts.Logger.Info("device login approved", "user_code", userCode, "user", username)
	return nil
}

// Deny refuses the device login waiting for userCode: the client's next
// poll gets access_denied.
func (p *Provider) Deny(userCode string) error {
	if err := p.storage.decide(userCode, "", false); err != nil {
		return fmt.Errorf("deny: %w", err)
	}
	p.opts.Logger.Info("device login denied", "user_code", userCode)
	return nil
}

// EndSessions revokes every refresh token of the user called username,
// as an administrator ending a user's sessions does, and returns how many
// there were. Access tokens already issued stay valid until they expire.
func (p *Provider) EndSessions(username string) int {
	u, ok := p.storage.userByName(username)
	if !ok {
		return 0
	}
	n := p.storage.endSessions(u.Subject)
	p.opts.Logger.Info("sessions ended", "user", username, "refresh_tokens", n)
	return n
}

// Token returns an access token for the user called username, as a
// device login would give, without the login.
func (p *Provider) Token(username string) (string, error) {
	return p.TokenWith(username, TokenOptions{})
}

// TokenOptions vary a token made by TokenWith, for tests of what a
// verifier refuses or how it reads roles.
type TokenOptions struct {
	// Lifetime is how long the token lasts (default: the provider's
	// access token lifetime); a negative one makes a token that has
	// already expired.
	Lifetime time.Duration
	// Audience replaces the token's aud (default: the provider's
	// audience and client ID).
	Audience []string
	// Claims are added to the token's claims, replacing those of the
	// same name (azp, realm_access, groups, resource_access...). The
	// registered claims (iss, sub, aud, exp, iat, nbf, jti, client_id)
	// cannot be replaced.
	Claims map[string]any
}

// TokenWith returns an access token for the user called username, varied
// by o.
func (p *Provider) TokenWith(username string, o TokenOptions) (string, error) {
	u, ok := p.storage.userByName(username)
	if !ok {
		return "", fmt.Errorf("token: no user %q", username)
	}
	lifetime := o.Lifetime
	if lifetime == 0 {
		lifetime = p.opts.AccessTokenLifetime
	}
	audience := o.Audience
	if audience == nil {
		audience = []string{p.opts.Audience, p.opts.ClientID}
	}
	claims, err := p.storage.claims(u.Subject)
	if err != nil {
		return "", fmt.Errorf("token for %s: %w", username, err)
	}
	maps.Copy(claims, o.Claims)
	id, exp := p.storage.mint(u.Subject, lifetime)
	c := oidc.NewAccessTokenClaims(p.issuer, u.Subject, audience, exp, id, p.opts.ClientID, 0)
	if lifetime < 0 {
		// Issued a little before it expired, so that iat and nbf are not
		// after exp.
		c.IssuedAt = oidc.FromTime(exp.Add(-time.Minute))
		c.NotBefore = c.IssuedAt
	}
	c.Claims = claims
	signer, err := op.SignerFromKey(p.storage.key)
	if err != nil {
		return "", fmt.Errorf("token for %s: %w", username, err)
	}
	tok, err := crypto.Sign(c, signer)
	if err != nil {
		return "", fmt.Errorf("token for %s: %w", username, err)
	}
	return tok, nil
}

// randomID is 128 random bits, base64url.
func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
