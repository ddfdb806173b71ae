// Package authtest is an OIDC issuer for tests: a discovery document and
// a key set served over HTTP on loopback, and access tokens signed as an
// issuer signs them, or wrongly, to prove they are refused.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Audience is the audience tokens are minted for by default.
const Audience = "attestation"

// Issuer serves /.well-known/openid-configuration and its key set.
type Issuer struct {
	URL string

	mu      sync.Mutex
	keys    []jose.JSONWebKey // private; the public halves are published
	serial  int
	fetches atomic.Int64
}

// Start starts an issuer with one RSA key; it stops when the test ends.
func Start(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{}
	i.keys = []jose.JSONWebKey{i.newKey(t, jose.RS256)}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	i.URL = srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                i.URL,
			"jwks_uri":                              i.URL + "/keys",
			"authorization_endpoint":                i.URL + "/auth",
			"token_endpoint":                        i.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		i.fetches.Add(1)
		i.mu.Lock()
		set := jose.JSONWebKeySet{}
		for _, k := range i.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		i.mu.Unlock()
		json.NewEncoder(w).Encode(set)
	})
	return i
}

// newKey returns a new signing key for alg with the next key ID.
func (i *Issuer) newKey(t testing.TB, alg jose.SignatureAlgorithm) jose.JSONWebKey {
	t.Helper()
	i.serial++
	return NewKey(t, alg, fmt.Sprintf("key-%d", i.serial))
}

// NewKey returns a new private signing key for alg (RS256 or ES256).
func NewKey(t testing.TB, alg jose.SignatureAlgorithm, kid string) jose.JSONWebKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(alg), Use: "sig"}
}

// Rotate replaces the published keys with a new one of alg and returns
// its key ID.
func (i *Issuer) Rotate(t testing.TB, alg jose.SignatureAlgorithm) string {
	t.Helper()
	i.mu.Lock()
	defer i.mu.Unlock()
	k := i.newKey(t, alg)
	i.keys = []jose.JSONWebKey{k}
	return k.KeyID
}

// Fetches is how many times the key set was fetched.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// Claims are a token's claims.
type Claims map[string]any

// Claims returns the claims of a valid access token for subject with
// Keycloak's realm roles: issuer, audience, azp, five minutes' life.
func (i *Issuer) Claims(subject string, roles ...string) Claims {
	now := time.Now()
	if roles == nil {
		roles = []string{}
	}
	return Claims{
		"iss":                i.URL,
		"sub":                subject,
		"aud":                []string{Audience, "account"},
		"azp":                "attestation-cli",
		"typ":                "Bearer",
		"iat":                now.Unix(),
		"exp":                now.Add(5 * time.Minute).Unix(),
		"preferred_username": subject,
		"realm_access":       map[string]any{"roles": roles},
	}
}

// Token signs claims with the issuer's current key.
func (i *Issuer) Token(t testing.TB, c Claims) string {
	t.Helper()
	i.mu.Lock()
	k := i.keys[0]
	i.mu.Unlock()
	return Sign(t, k, c)
}

// Forged signs claims with a key the issuer does not publish, under the
// current key's ID.
func (i *Issuer) Forged(t testing.TB, c Claims) string {
	t.Helper()
	i.mu.Lock()
	k := i.keys[0]
	i.mu.Unlock()
	return Sign(t, NewKey(t, jose.SignatureAlgorithm(k.Algorithm), k.KeyID), c)
}

// Sign signs claims with key, a private JSON web key.
func Sign(t testing.TB, key jose.JSONWebKey, c Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
