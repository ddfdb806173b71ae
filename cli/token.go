package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/attestation/attestation/internal/atomicfile"
)

// TokenCacheFile is where `attestation auth login` keeps the login, under
// the user's config directory ($XDG_CONFIG_HOME, else ~/.config).
const TokenCacheFile = "attestation/token.json"

// refreshMargin: an access token that expires sooner than this is
// refreshed before it is sent, so that it does not expire on the way.
const refreshMargin = 30 * time.Second

// oidcTimeout bounds each exchange with the OIDC provider (discovery,
// a refresh, a revocation); a device login's polling is bounded by its
// code's expiry instead.
const oidcTimeout = 30 * time.Second

// login is the token cache: what a device login got from the OIDC
// provider, rewritten at each refresh.
type login struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

// newLogin is the login a token response gives.
func newLogin(issuer, clientID string, tok *oauth2.Token) *login {
	l := &login{
		Issuer: issuer, ClientID: clientID,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: tok.TokenType, Expiry: tok.Expiry,
	}
	if l.Expiry.IsZero() {
		// No expires_in: a JWT says when it expires.
		if exp, ok := l.claims()["exp"].(float64); ok {
			l.Expiry = time.Unix(int64(exp), 0)
		}
	}
	return l
}

// fresh reports whether the access token can be sent as it is.
func (l *login) fresh() bool {
	return l.AccessToken != "" && (l.Expiry.IsZero() || time.Until(l.Expiry) > refreshMargin)
}

// claims returns the claims of the access token when it is a JWT, read
// without checking its signature: this is the CLI's own token, shown to
// its owner; the daemon is who verifies it.
func (l *login) claims() map[string]any {
	parts := strings.Split(l.AccessToken, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c map[string]any
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	return c
}

// tokenCachePath is where the login is kept.
func tokenCachePath(getenv func(string) string) (string, error) {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep a login")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, TokenCacheFile), nil
}

// readLogin reads the login kept at path; an error wraps fs.ErrNotExist
// when there is none.
func readLogin(path string) (*login, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the login: %w", err)
	}
	var l login
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("read the login in %s: %w", path, err)
	}
	if l.Issuer == "" || l.AccessToken == "" {
		return nil, fmt.Errorf("read the login in %s: no issuer or access token", path)
	}
	return &l, nil
}

// save writes the login to path, readable by its owner only.
func (l *login) save(path string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	// The directory holds credentials: its own, not others' to list.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// authError is a problem with the credentials themselves, said whole:
// the command it stopped adds nothing to it.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// notLoggedIn is the error of a command that needs the daemon when there
// is no token at all.
func (e *Env) notLoggedIn() error {
	return &authError{fmt.Sprintf("not logged in: the daemon at %s requires a token: run `attestation auth login`, "+
		"or pass --token or set %s (a daemon started without one keeps its generated admin token in DATA_DIR/admin-token)",
		e.URL, EnvToken)}
}

// loginExpired is the error when a login's refresh token no longer works.
func loginExpired(l *login, err error) error {
	return &authError{fmt.Sprintf("your login at %s has expired (refreshing it failed: %v): run `attestation auth login`", l.Issuer, err)}
}

// bearerToken is the one token function: every command that calls the
// daemon, core or extension, gets its token here, when it first needs
// one. --token or ATTESTATION_TOKEN wins; else the login cache, its
// access token refreshed when it is about to expire; else an error
// saying how to log in.
func (e *Env) bearerToken(ctx context.Context) (string, error) {
	if e.Token != "" {
		return e.Token, nil
	}
	e.tokenMu.Lock()
	defer e.tokenMu.Unlock()
	if e.login != nil && e.login.fresh() {
		return e.login.AccessToken, nil
	}
	path, err := tokenCachePath(e.Getenv)
	if err != nil {
		return "", e.notLoggedIn()
	}
	l, err := readLogin(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", e.notLoggedIn()
	}
	if err != nil {
		return "", &authError{err.Error() + ": run `attestation auth login`"}
	}
	if !l.fresh() {
		if l, err = l.refresh(ctx); err != nil {
			return "", err
		}
		if err := l.save(path); err != nil {
			fmt.Fprintf(e.Stderr, "attestation: warning: the refreshed login is used but not kept: %v\n", err)
		}
	}
	e.login = l
	return l.AccessToken, nil
}

// loggedIn reports whether requests carry the token of a login.
func (e *Env) loggedIn() bool {
	e.tokenMu.Lock()
	defer e.tokenMu.Unlock()
	return e.login != nil
}

// refresh exchanges the refresh token for a new access token (and, as
// providers that rotate them send, a new refresh token).
func (l *login) refresh(ctx context.Context) (*login, error) {
	if l.RefreshToken == "" {
		return nil, loginExpired(l, errors.New("no refresh token"))
	}
	ctx, cancel := context.WithTimeout(oidcContext(ctx), oidcTimeout)
	defer cancel()
	prov, err := discover(ctx, l.Issuer)
	if err != nil {
		return nil, &authError{"cannot refresh the login: " + err.Error()}
	}
	cfg := oauthConfig(prov.Provider, l.ClientID)
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: l.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			return nil, loginExpired(l, fmt.Errorf("%s %s", re.ErrorCode, re.ErrorDescription))
		}
		return nil, &authError{fmt.Sprintf("cannot refresh the login at %s: %v", l.Issuer, err)}
	}
	return newLogin(l.Issuer, l.ClientID, tok), nil
}

// oidcHTTPClient carries the CLI's exchanges with the OIDC provider.
var oidcHTTPClient = &http.Client{Timeout: oidcTimeout}

// oidcContext makes go-oidc and x/oauth2 use oidcHTTPClient.
func oidcContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, oidcHTTPClient)
}

// oauthConfig is the OAuth 2.0 configuration of the public client
// clientID at prov: no secret, the client ID in the request body.
func oauthConfig(prov *oidc.Provider, clientID string) *oauth2.Config {
	ep := prov.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInParams
	return &oauth2.Config{ClientID: clientID, Endpoint: ep, Scopes: []string{oidc.ScopeOpenID, "profile"}}
}
