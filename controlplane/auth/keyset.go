package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keySet is an issuer's signing keys (its JWKS), fetched when first
// needed and again when a token names a key ID the set lacks (the
// issuer rotated its keys), but at most once per keyRefetchInterval. It
// implements go-oidc's KeySet; go-oidc checks the algorithm and claims.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu       sync.Mutex
	keys     []jose.JSONWebKey
	fetched  time.Time // of the last fetch; zero before the first
	fetchErr error     // of the last fetch, when it failed
}

// maxJWKSBytes bounds the key set document read.
const maxJWKSBytes = 1 << 20

// VerifySignature returns the payload of a JWT signed by one of the keys.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("malformed token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token has more than one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, err := k.keysFor(ctx, kid)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&key); err == nil {
			return payload, nil
		}
	}
	if kid != "" && !hasKey(keys, kid) {
		return nil, fmt.Errorf("signed with key %q, which the issuer does not publish", kid)
	}
	return nil, errors.New("bad signature")
}

// keysFor returns the keys, fetching them when there are none or kid is
// not among them, and the last fetch is at least keyRefetchInterval old.
// A failed fetch keeps the keys had before; with none, it is the error.
func (k *keySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	missing := len(k.keys) == 0 || (kid != "" && !hasKey(k.keys, kid))
	if missing && (k.fetched.IsZero() || k.now().Sub(k.fetched) >= keyRefetchInterval) {
		k.fetched = k.now()
		if keys, err := k.fetch(ctx); err != nil {
			k.fetchErr = &UnavailableError{fmt.Errorf("fetch the issuer's keys from %s: %w", k.url, err)}
			k.log.Warn("OIDC keys unreachable", "url", k.url, "err", err)
		} else {
			k.keys, k.fetchErr = keys, nil
			k.log.Info("fetched OIDC keys", "url", k.url, "keys", len(keys))
		}
	}
	if len(k.keys) == 0 && k.fetchErr != nil {
		return nil, k.fetchErr
	}
	return k.keys, nil
}

// fetch reads the key set document.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JSON web key set: %w", err)
	}
	// A key of a type this cannot read (or an encryption key) is not one
	// tokens are signed with here: skipped, not fatal.
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) == nil && (key.Use == "" || key.Use == "sig") {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

func hasKey(keys []jose.JSONWebKey, kid string) bool {
	for _, k := range keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}
