package oidcdev

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is what op asks of the provider: the client, the users, the
// device authorizations waiting for a person, and the tokens issued, all
// in memory.
type storage struct {
	client   *client
	audience string
	users    map[string]User // by subject
	key      *signingKey
	// Lifetimes of what the provider issues.
	accessTTL, refreshTTL time.Duration

	mu      sync.Mutex
	devices map[string]*deviceAuthorization // by device code
	byCode  map[string]string               // device code by normalized user code
	access  map[string]*accessToken         // by token ID (the JWT's jti)
	refresh map[string]*refreshToken        // by token value
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.DeviceAuthorizationStorage     = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*storage)(nil)
)

type deviceAuthorization struct {
	userCode string
	state    op.DeviceAuthorizationState
}

type accessToken struct {
	subject, clientID string
	expires           time.Time
}

type refreshToken struct {
	subject, clientID string
	audience, scopes  []string
	authTime, expires time.Time
}

// errDeviceOnly answers the flows this provider does not offer.
var errDeviceOnly = errors.New("this development provider offers the device authorization grant (and refresh) only")

func newStorage(c *client, audience string, users []User, accessTTL, refreshTTL time.Duration) (*storage, error) {
	key, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	s := &storage{
		client: c, audience: audience, key: key,
		accessTTL: accessTTL, refreshTTL: refreshTTL,
		users:   make(map[string]User, len(users)),
		devices: make(map[string]*deviceAuthorization),
		byCode:  make(map[string]string),
		access:  make(map[string]*accessToken),
		refresh: make(map[string]*refreshToken),
	}
	for _, u := range users {
		s.users[u.Subject] = u
	}
	return s, nil
}

// userByName returns the user called username.
func (s *storage) userByName(username string) (User, bool) {
	for _, u := range s.users {
		if u.Username == username {
			return u, true
		}
	}
	return User{}, false
}

// --- device authorization (RFC 8628) ---

// normalizeUserCode lets a person type a user code in any case, with or
// without its dash.
func normalizeUserCode(code string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return -1
	}, code)
}

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	if clientID != s.client.id {
		return fmt.Errorf("unknown client %q", clientID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for dc, d := range s.devices {
		if now.After(d.state.Expires) {
			delete(s.byCode, normalizeUserCode(d.userCode))
			delete(s.devices, dc)
		}
	}
	code := normalizeUserCode(userCode)
	if _, taken := s.byCode[code]; taken {
		return op.ErrDuplicateUserCode
	}
	// Like Keycloak, a device login always gets a refresh token; op
	// issues one when offline_access is among the scopes.
	if !slices.Contains(scopes, oidc.ScopeOfflineAccess) {
		scopes = append(slices.Clip(scopes), oidc.ScopeOfflineAccess)
	}
	s.devices[deviceCode] = &deviceAuthorization{
		userCode: userCode,
		state: op.DeviceAuthorizationState{
			ClientID: clientID,
			Audience: []string{s.audience},
			Scopes:   scopes,
			Expires:  expires,
		},
	}
	s.byCode[code] = deviceCode
	return nil
}

// GetDeviceAuthorizatonState returns the state of a device code's
// authorization. A completed one is handed out once: the device code is
// then spent.
func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[deviceCode]
	if !ok || d.state.ClientID != clientID {
		return nil, errors.New("unknown or spent device code")
	}
	state := d.state
	state.Audience = slices.Clone(d.state.Audience)
	if state.Done || state.Denied {
		delete(s.devices, deviceCode)
		delete(s.byCode, normalizeUserCode(d.userCode))
	}
	return &state, nil
}

// decide approves (as subject) or denies the authorization waiting for
// userCode.
func (s *storage) decide(userCode, subject string, approve bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[s.byCode[normalizeUserCode(userCode)]]
	if !ok {
		return fmt.Errorf("no login is waiting for code %q", userCode)
	}
	if time.Now().After(d.state.Expires) {
		return fmt.Errorf("code %q has expired", userCode)
	}
	if d.state.Done || d.state.Denied {
		return fmt.Errorf("code %q was already answered", userCode)
	}
	if approve {
		d.state.Done, d.state.Subject, d.state.AuthTime = true, subject, time.Now()
		d.state.AMR = []string{"pwd"}
	} else {
		d.state.Denied = true
	}
	return nil
}

// --- tokens ---

// newAccessToken records an access token of the client for subject,
// lasting ttl; s.mu is held.
func (s *storage) newAccessToken(subject string, ttl time.Duration) (id string, expires time.Time) {
	id, expires = randomID(), time.Now().Add(ttl)
	s.access[id] = &accessToken{subject: subject, clientID: s.client.id, expires: expires}
	return id, expires
}

// mint records an access token for subject with the given lifetime,
// for Provider.TokenWith.
func (s *storage) mint(subject string, ttl time.Duration) (id string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newAccessToken(subject, ttl)
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, exp := s.newAccessToken(req.GetSubject(), s.accessTTL)
	return id, exp, nil
}

// CreateAccessAndRefreshTokens issues an access token and a refresh
// token; given the refresh token being used, it rotates it: the old one
// stops working.
func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := &refreshToken{
		subject: req.GetSubject(), clientID: s.client.id,
		audience: req.GetAudience(), scopes: req.GetScopes(),
		authTime: time.Now(),
	}
	if ir, ok := req.(op.IDTokenRequest); ok && !ir.GetAuthTime().IsZero() {
		rt.authTime = ir.GetAuthTime()
	}
	if current != "" {
		old, ok := s.refresh[current]
		if !ok || time.Now().After(old.expires) {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token revoked or expired")
		}
		delete(s.refresh, current)
		rt.authTime = old.authTime
	}
	rt.expires = time.Now().Add(s.refreshTTL)
	value := randomID()
	s.refresh[value] = rt
	id, exp := s.newAccessToken(rt.subject, s.accessTTL)
	return id, value, exp, nil
}

func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[token]
	if !ok || time.Now().After(rt.expires) {
		return nil, errors.New("refresh token revoked or expired")
	}
	return &refreshRequest{
		subject: rt.subject, clientID: rt.clientID, authTime: rt.authTime,
		audience: slices.Clone(rt.audience), scopes: slices.Clone(rt.scopes),
	}, nil
}

func (s *storage) GetRefreshTokenInfo(_ context.Context, clientID, token string) (userID, tokenID string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[token]
	if !ok || rt.clientID != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.subject, token, nil
}

// RevokeToken revokes a refresh token (given as itself) or an access
// token (given as its ID). RFC 7009: an unknown token is no error.
func (s *storage) RevokeToken(_ context.Context, tokenOrID, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt, ok := s.refresh[tokenOrID]; ok {
		if rt.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.refresh, tokenOrID)
		return nil
	}
	if at, ok := s.access[tokenOrID]; ok {
		if at.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.access, tokenOrID)
	}
	return nil
}

// endSessions revokes every refresh token of subject and returns how
// many there were.
func (s *storage) endSessions(subject string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for v, rt := range s.refresh {
		if rt.subject == subject {
			delete(s.refresh, v)
			n++
		}
	}
	return n
}

func (s *storage) TerminateSession(_ context.Context, userID, _ string) error {
	s.endSessions(userID)
	return nil
}

// --- claims ---

// claims are the Keycloak-shaped claims of subject's access tokens:
// azp, the profile, realm roles and groups.
func (s *storage) claims(subject string) (map[string]any, error) {
	u, ok := s.users[subject]
	if !ok {
		return nil, fmt.Errorf("unknown user %q", subject)
	}
	c := map[string]any{
		"azp":                s.client.id,
		"preferred_username": u.Username,
		"name":               u.Name,
		"realm_access":       map[string]any{"roles": nonNil(u.Roles)},
		"groups":             nonNil(u.Groups),
	}
	if u.Email != "" {
		c["email"] = u.Email
	}
	return c, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	return s.claims(req.GetSubject())
}

func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, _ []string) (map[string]any, error) {
	return s.claims(userID)
}

// setUserinfo fills the OIDC profile of subject.
func (s *storage) setUserinfo(info *oidc.UserInfo, subject string) error {
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("unknown user %q", subject)
	}
	info.Subject = u.Subject
	info.PreferredUsername = u.Username
	info.Name = u.Name
	info.Email = u.Email
	if u.Email != "" {
		info.EmailVerified = true
	}
	info.AppendClaims("realm_access", map[string]any{"roles": nonNil(u.Roles)})
	info.AppendClaims("groups", nonNil(u.Groups))
	return nil
}

// SetUserinfoFromScopes is deprecated in op; SetUserinfoFromRequest
// does the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, _ []string) error {
	return s.setUserinfo(info, req.GetSubject())
}

// SetUserinfoFromToken answers the userinfo endpoint for a live access
// token.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	if _, err := s.liveAccessToken(tokenID, subject); err != nil {
		return err
	}
	return s.setUserinfo(info, subject)
}

// liveAccessToken returns the access token tokenID of subject unless it
// was revoked or has expired.
func (s *storage) liveAccessToken(tokenID, subject string) (*accessToken, error) {
	s.mu.Lock()
	at, ok := s.access[tokenID]
	s.mu.Unlock()
	if !ok || at.subject != subject || time.Now().After(at.expires) {
		return nil, errors.New("access token revoked or expired")
	}
	return at, nil
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	at, err := s.liveAccessToken(tokenID, subject)
	if err != nil {
		return err
	}
	info := new(oidc.UserInfo)
	if err := s.setUserinfo(info, subject); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.ClientID = at.clientID
	resp.Expiration = oidc.FromTime(at.expires)
	return nil
}

// --- clients ---

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if clientID != s.client.id {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client %q", clientID)
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("no client of this provider has a secret")
}

// --- keys ---

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func newSigningKey() (*signingKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &signingKey{id: randomID(), key: key}, nil
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is the signing key as the JWKS endpoint shows it.
type publicKey struct{ *signingKey }

func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.key}}, nil
}

func (s *storage) Health(context.Context) error { return nil }

// --- what the device grant does not use ---

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, oidc.ErrUnauthorizedClient().WithDescription("%s", errDeviceOnly)
}

func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errDeviceOnly
}

func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errDeviceOnly
}

func (s *storage) SaveAuthCode(context.Context, string, string) error { return errDeviceOnly }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return nil }

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errDeviceOnly
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errDeviceOnly
}

// refreshRequest is a refresh token as op asks for it when refreshing.
type refreshRequest struct {
	subject, clientID string
	audience, scopes  []string
	authTime          time.Time
}

func (r *refreshRequest) GetAMR() []string                 { return []string{"pwd"} }
func (r *refreshRequest) GetAudience() []string            { return r.audience }
func (r *refreshRequest) GetAuthTime() time.Time           { return r.authTime }
func (r *refreshRequest) GetClientID() string              { return r.clientID }
func (r *refreshRequest) GetScopes() []string              { return r.scopes }
func (r *refreshRequest) GetSubject() string               { return r.subject }
func (r *refreshRequest) SetCurrentScopes(scopes []string) { r.scopes = scopes }
