package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
)

// Environment variables of auth login; its flags beat them.
const (
	EnvOIDCIssuer   = "ATTESTATION_OIDC_ISSUER"
	EnvOIDCClientID = "ATTESTATION_OIDC_CLIENT_ID"
)

// DefaultClientID is the OIDC client the CLI logs in as unless told.
const DefaultClientID = "attestation-cli"

func authCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
		Short: "Log in to the daemon with OpenID Connect (Keycloak), show or end the login",
		Long: `Log in with your organisation's OpenID Connect provider (Keycloak) instead of
passing the daemon's admin token. auth login runs the OAuth 2.0 device
authorization grant: it prints a URL and a code, you approve the login in a
browser (on any machine), and the CLI keeps the tokens in
~/.config/attestation/token.json ($XDG_CONFIG_HOME honoured), refreshing
them as they expire. Every other command then sends the access token, unless
--token or ` + EnvToken + ` is given.`,
		Example: `  attestation auth login --issuer https://keycloak.example/realms/ops
  attestation auth status
  attestation auth logout`,
	}
	cmd.AddCommand(authLoginCommand(env), authStatusCommand(env), authLogoutCommand(env))
	return cmd
}

func authLoginCommand(env *Env) *cobra.Command {
	var issuer, clientID, audience string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in with the OAuth 2.0 device authorization grant",
		Long: `Log in with the OIDC provider at --issuer: open the URL printed, enter the
code, and approve; the command waits, polling the provider, until you do (or
the code expires, or Ctrl-C). The tokens are kept for every later command.

--issuer defaults to ` + EnvOIDCIssuer + `, then to the issuer of the current
login; --client-id to ` + EnvOIDCClientID + `, then to the current login's, then
to ` + DefaultClientID + `. --audience, when given, is sent as the audience
parameter; Keycloak puts the daemon's audience in tokens with an audience
mapper instead (see docs/keycloak.md).`,
		Example: `  attestation auth login --issuer https://keycloak.example/realms/ops
  ATTESTATION_OIDC_ISSUER=http://127.0.0.1:9400 attestation auth login`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := tokenCachePath(env.Getenv)
			if err != nil {
				return err
			}
			// An unreadable login only gives no defaults; this one replaces it.
			current, _ := readLogin(path)
			issuer = cmp.Or(issuer, env.Getenv(EnvOIDCIssuer), current.issuer())
			if issuer == "" {
				return usageErrorf("no OIDC issuer: pass --issuer or set %s (Keycloak: https://HOST/realms/REALM)", EnvOIDCIssuer)
			}
			clientID = cmp.Or(clientID, env.Getenv(EnvOIDCClientID), current.clientID(), DefaultClientID)
			return env.deviceLogin(cmd.Context(), path, issuer, clientID, audience)
		},
	}
	f := cmd.Flags()
	f.StringVar(&issuer, "issuer", "", "OIDC issuer URL (env "+EnvOIDCIssuer+")")
	f.StringVar(&clientID, "client-id", "", "OIDC client ID (env "+EnvOIDCClientID+"; default "+DefaultClientID+")")
	f.StringVar(&audience, "audience", "", "audience to ask the provider for (sent only when given)")
	return cmd
}

// deviceLogin runs the device authorization grant (RFC 8628) with the
// provider at issuer and keeps the tokens at path.
func (e *Env) deviceLogin(ctx context.Context, path, issuer, clientID, audience string) error {
	ctx = oidcContext(ctx)
	prov, err := discover(ctx, issuer)
	if err != nil {
		return err
	}
	cfg := oauthConfig(prov.Provider, clientID)
	if cfg.Endpoint.DeviceAuthURL == "" {
		return fmt.Errorf("%s does not offer the device authorization grant (no device_authorization_endpoint in its discovery document)", issuer)
	}
	var opts []oauth2.AuthCodeOption
	if audience != "" {
		opts = append(opts, oauth2.SetAuthURLParam("audience", audience))
	}
	start, cancel := context.WithTimeout(ctx, oidcTimeout)
	defer cancel()
	da, err := cfg.DeviceAuth(start, opts...)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && (re.ErrorCode == "unauthorized_client" || re.ErrorCode == "invalid_client") {
			return fmt.Errorf("%s refused a device login for client %s (%s %s): is the client public, with the OAuth 2.0 Device Authorization Grant enabled?",
				issuer, clientID, re.ErrorCode, re.ErrorDescription)
		}
		return fmt.Errorf("start a device login at %s: %w", issuer, err)
	}

	fmt.Fprintf(e.Stdout, "To log in, open %s\nand enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(e.Stdout, "(or open %s)\n", da.VerificationURIComplete)
	}
	wait := "Waiting for approval"
	if !da.Expiry.IsZero() {
		wait += fmt.Sprintf(" (the code expires in %s)", time.Until(da.Expiry).Round(time.Second))
	}
	fmt.Fprintln(e.Stdout, wait+"...")

	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			return errors.New("login canceled")
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return fmt.Errorf("the login was denied at %s", issuer)
		case errors.As(err, &re) && re.ErrorCode == "expired_token", errors.Is(err, context.DeadlineExceeded):
			return errors.New("the code expired before the login was approved: run `attestation auth login` again")
		}
		return fmt.Errorf("device login at %s: %w", issuer, err)
	}
	l := newLogin(issuer, clientID, tok)
	if err := l.save(path); err != nil {
		return err
	}
	st := l.status(path)
	fmt.Fprintf(e.Stdout, "Logged in to %s as %s; roles: %s.\nThe login is kept in %s", issuer, st.who(), noneIfEmpty(st.roles()), path)
	if l.RefreshToken != "" {
		fmt.Fprintln(e.Stdout, " and refreshed as it expires.")
	} else {
		fmt.Fprintln(e.Stdout, "; the provider gave no refresh token: log in again when it expires.")
	}
	return nil
}

// oidcProvider is what the CLI needs of an OIDC provider's discovery
// document.
type oidcProvider struct {
	*oidc.Provider
	// Revocation is the revocation_endpoint (RFC 7009), if any.
	Revocation string
}

// discover reads the discovery document of issuer.
func discover(ctx context.Context, issuer string) (*oidcProvider, error) {
	ctx, cancel := context.WithTimeout(ctx, oidcTimeout)
	defer cancel()
	prov, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discover the OIDC provider %s: %w", issuer, err)
	}
	var extra struct {
		Revocation string `json:"revocation_endpoint"`
	}
	if err := prov.Claims(&extra); err != nil {
		return nil, fmt.Errorf("discover the OIDC provider %s: %w", issuer, err)
	}
	return &oidcProvider{Provider: prov, Revocation: extra.Revocation}, nil
}

func authStatusCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show who is logged in, with which roles, until when",
		Long: `Show the login kept by auth login: the issuer, who you are and your roles as
the access token says (read here without checking it; the daemon checks it),
when the access token expires, and whether a refresh token is kept to renew
it. Without a login it says so and exits 1.`,
		Example: `  attestation auth status
  attestation auth status -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, l, err := env.currentLogin()
			if err != nil {
				return err
			}
			st := l.status(path)
			return env.Print(st, st.table)
		},
	}
}

// currentLogin returns the login kept, or an error saying there is none.
func (e *Env) currentLogin() (string, *login, error) {
	path, err := tokenCachePath(e.Getenv)
	if err != nil {
		return "", nil, err
	}
	l, err := readLogin(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil, &authError{"not logged in: run `attestation auth login`"}
	}
	return path, l, err
}

// authStatus is what auth status shows of a login.
type authStatus struct {
	Issuer            string              `json:"issuer"`
	ClientID          string              `json:"client_id"`
	Subject           string              `json:"subject,omitempty"`
	PreferredUsername string              `json:"preferred_username,omitempty"`
	Name              string              `json:"name,omitempty"`
	RealmRoles        []string            `json:"realm_roles"`
	ClientRoles       map[string][]string `json:"client_roles,omitempty"`
	Groups            []string            `json:"groups"`
	Expiry            time.Time           `json:"expiry,omitzero"`
	Expired           bool                `json:"expired"`
	RefreshToken      bool                `json:"refresh_token"`
	File              string              `json:"file"`
}

func (l *login) status(path string) authStatus {
	c := l.claims()
	st := authStatus{
		Issuer: l.Issuer, ClientID: l.ClientID,
		Subject:           claimString(c["sub"]),
		PreferredUsername: claimString(c["preferred_username"]),
		Name:              claimString(c["name"]),
		RealmRoles:        claimStrings(claimAt(c, "realm_access", "roles")),
		Groups:            claimStrings(c["groups"]),
		Expiry:            l.Expiry,
		Expired:           !l.Expiry.IsZero() && time.Now().After(l.Expiry),
		RefreshToken:      l.RefreshToken != "",
		File:              path,
	}
	if st.PreferredUsername == "" {
		st.PreferredUsername = claimString(c["email"])
	}
	if ra, ok := c["resource_access"].(map[string]any); ok {
		for client := range ra {
			if roles := claimStrings(claimAt(ra, client, "roles")); len(roles) > 0 {
				if st.ClientRoles == nil {
					st.ClientRoles = make(map[string][]string)
				}
				st.ClientRoles[client] = roles
			}
		}
	}
	return st
}

// who names the logged-in user: username (name), or the subject.
func (st authStatus) who() string {
	switch {
	case st.PreferredUsername != "" && st.Name != "" && st.Name != st.PreferredUsername:
		return st.PreferredUsername + " (" + st.Name + ")"
	case st.PreferredUsername != "":
		return st.PreferredUsername
	case st.Name != "":
		return st.Name
	case st.Subject != "":
		return st.Subject
	}
	return "an unknown user (the access token is not a JWT)"
}

// roles lists every role the token carries, client roles as
// client:role, groups as they are.
func (st authStatus) roles() string {
	all := slices.Clone(st.RealmRoles)
	clients := make([]string, 0, len(st.ClientRoles))
	for c := range st.ClientRoles {
		clients = append(clients, c)
	}
	sort.Strings(clients)
	for _, c := range clients {
		for _, r := range st.ClientRoles[c] {
			all = append(all, c+":"+r)
		}
	}
	return strings.Join(append(all, st.Groups...), ", ")
}

func (st authStatus) table(w io.Writer) error {
	expiry := "-"
	if !st.Expiry.IsZero() {
		expiry = st.Expiry.In(time.Local).Format(timeLayout)
		if left := time.Until(st.Expiry).Round(time.Second); left > 0 {
			expiry += fmt.Sprintf(" (in %s)", left)
		} else {
			expiry += fmt.Sprintf(" (expired %s ago)", -left)
		}
	}
	refresh := "no: log in again when the access token expires"
	if st.RefreshToken {
		refresh = "yes: the access token is renewed as it expires"
	}
	var clientRoles []string
	for c, roles := range st.ClientRoles {
		clientRoles = append(clientRoles, c+": "+strings.Join(roles, ", "))
	}
	sort.Strings(clientRoles)
	tw := newTable(w)
	for _, r := range []struct{ k, v string }{
		{"Issuer", st.Issuer},
		{"Client", st.ClientID},
		{"User", st.who()},
		{"Subject", st.Subject},
		{"Realm roles", strings.Join(st.RealmRoles, ", ")},
		{"Client roles", strings.Join(clientRoles, "; ")},
		{"Groups", strings.Join(st.Groups, ", ")},
		{"Expires", expiry},
		{"Refresh token", refresh},
		{"Token file", st.File},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", r.k, orDash(r.v))
	}
	return tw.Flush()
}

func authLogoutCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the refresh token and forget the login",
		Long: `Revoke the login's refresh token at the OIDC provider (RFC 7009), where the
provider offers a revocation endpoint, and delete the token file. A
revocation that fails is reported as a warning; the file is deleted all the
same. An access token already issued stays valid until it expires.`,
		Example: `  attestation auth logout`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, l, err := env.currentLogin()
			var ae *authError
			if errors.As(err, &ae) {
				fmt.Fprintln(env.Stdout, "Not logged in: nothing to do.")
				return nil
			}
			if err != nil {
				// An unreadable login cannot be revoked, only forgotten.
				if rmErr := os.Remove(path); rmErr != nil {
					return fmt.Errorf("%w; and cannot delete it: %v", err, rmErr)
				}
				fmt.Fprintf(env.Stdout, "Deleted %s (%v).\n", path, err)
				return nil
			}
			did := l.revoke(cmd.Context(), env.Stderr)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("delete the login: %w", err)
			}
			fmt.Fprintf(env.Stdout, "Logged out of %s: %s; deleted %s.\n", l.Issuer, did, path)
			return nil
		},
	}
}

// revoke revokes the refresh token at the issuer's revocation endpoint
// and says what it did; a failure is a warning on stderr.
func (l *login) revoke(ctx context.Context, stderr io.Writer) string {
	if l.RefreshToken == "" {
		return "no refresh token to revoke"
	}
	warn := func(err error) string {
		fmt.Fprintf(stderr, "attestation: warning: could not revoke the refresh token at %s: %v\n", l.Issuer, err)
		return "the refresh token was not revoked"
	}
	ctx = oidcContext(ctx)
	prov, err := discover(ctx, l.Issuer)
	if err != nil {
		return warn(err)
	}
	if prov.Revocation == "" {
		return "the provider offers no revocation endpoint, so the refresh token was not revoked"
	}
	ctx, cancel := context.WithTimeout(ctx, oidcTimeout)
	defer cancel()
	form := url.Values{"token": {l.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {l.ClientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, prov.Revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return warn(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := oidcHTTPClient.Do(req)
	if err != nil {
		return warn(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return warn(fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body))))
	}
	return "revoked the refresh token"
}

func (l *login) issuer() string {
	if l == nil {
		return ""
	}
	return l.Issuer
}

func (l *login) clientID() string {
	if l == nil {
		return ""
	}
	return l.ClientID
}

func noneIfEmpty(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// claimAt follows keys into nested JSON objects.
func claimAt(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// claimString reads a JSON string.
func claimString(v any) string {
	s, _ := v.(string)
	return s
}

// claimStrings reads a JSON string or list of strings.
func claimStrings(v any) []string {
	out := []string{}
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case []any:
		for _, s := range x {
			if s, ok := s.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}
