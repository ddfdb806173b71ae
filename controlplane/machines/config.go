package machines

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// TokenSize is the number of random bytes of an agent credential (a
// session or a config token).
const TokenSize = 32

// NewToken returns a random credential, base64url without padding, and the
// hash under which it is stored.
func NewToken() (token string, hash []byte, err error) {
	b := make([]byte, TokenSize)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("make token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the SHA-256 of a credential: what the store keeps.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// Config tokens are derived from a random ID and a key kept outside the
// database: token = base64url(id || HMAC-SHA256(key, label || id)[:16]).
// The database keeps the ID and the token's hash, so a copy of it alone
// yields no usable token, while the daemon can hand an unused token out
// again (to an agent that reconnects) without storing it.
const (
	configTokenIDSize  = 16
	configTokenMACSize = TokenSize - configTokenIDSize
	configTokenLabel   = "attestation config token v1\x00"
)

// ConfigTokenKeySize is the size of the key config tokens are derived with.
const ConfigTokenKeySize = 32

func (s *Service) deriveConfigToken(id []byte) string {
	mac := hmac.New(sha256.New, s.configKey)
	mac.Write([]byte(configTokenLabel))
	mac.Write(id)
	return base64.RawURLEncoding.EncodeToString(append(bytes.Clone(id), mac.Sum(nil)[:configTokenMACSize]...))
}

// mintConfigURL stores a new one-time config token of m (revoking its
// unused ones) and returns its URL and token ID; it returns "" when the
// Service mints no config tokens.
func (s *Service) mintConfigURL(ctx context.Context, tx *store.Tx, m *store.Machine) (url, tokenID string, err error) {
	if s.configBase == "" {
		return "", "", nil
	}
	id := make([]byte, configTokenIDSize)
	if _, err := rand.Read(id); err != nil {
		return "", "", fmt.Errorf("make config token: %w", err)
	}
	tok := s.deriveConfigToken(id)
	tokenID = hex.EncodeToString(id)
	if err := tx.InsertConfigToken(ctx, m.ID, tokenID, HashToken(tok), tx.Now().Add(s.configTTL)); err != nil {
		return "", "", err
	}
	return s.configBase + tok, tokenID, nil
}

// ConfigURLOfToken returns the config URL of the token with the given ID
// (as node.provisioned carries it), used or not; "" for a malformed ID or
// when the Service mints no config tokens. The dispatcher uses it for the
// subscriptions that ask for config URLs.
func (s *Service) ConfigURLOfToken(tokenID string) string {
	raw, err := hex.DecodeString(tokenID)
	if err != nil || len(raw) != configTokenIDSize || s.configBase == "" {
		return ""
	}
	return s.configBase + s.deriveConfigToken(raw)
}

// ConfigURL returns the one-time config URL of a provisioned machine whose
// config has not been fetched yet: the same URL as long as it is unused
// and unexpired, so asking again changes nothing; a new one (revoking the
// old) once it has expired. It returns "" and no error when the machine is
// not provisioned or has fetched its config already.
func (s *Service) ConfigURL(ctx context.Context, id string) (string, error) {
	id = NormalizeID(id)
	m, err := s.store.GetMachine(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = ErrNotFound
		}
		return "", fmt.Errorf("config URL of machine %s: %w", id, err)
	}
	return s.ConfigURLOf(ctx, m)
}

// ConfigURLOf is ConfigURL for a machine the caller has just read, which
// saves reading it again.
func (s *Service) ConfigURLOf(ctx context.Context, m *store.Machine) (string, error) {
	id := m.ID
	if m.State != lifecycle.Provisioned || !m.ConfiguredAt.IsZero() || s.configBase == "" {
		return "", nil
	}
	tokenID, expires, err := s.store.UsableConfigToken(ctx, id)
	if err == nil && time.Now().Before(expires) {
		url := s.ConfigURLOfToken(tokenID)
		if url == "" {
			return "", fmt.Errorf("config URL of machine %s: stored token ID %q is malformed", id, tokenID)
		}
		return url, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("config URL of machine %s: %w", id, err)
	}
	var url string
	_, err = s.update(ctx, "config URL of", id, func(tx *store.Tx, m *store.Machine) error {
		url = ""
		if m.State != lifecycle.Provisioned || !m.ConfiguredAt.IsZero() {
			return nil
		}
		var err error
		url, _, err = s.mintConfigURL(ctx, tx, m)
		return err
	})
	return url, err
}

// Renderer renders the config of a machine; it runs in the transaction
// that uses the token, so that a failure leaves the token unused.
type Renderer func(ctx context.Context, tx *store.Tx, m *store.Machine) ([]byte, error)

// FetchConfig uses a one-time config token: in one transaction it marks
// the token used (exactly one of any number of concurrent fetches
// succeeds), renders the machine's config, records the fetch and emits
// node.configured. A token that is unknown fails with store.ErrNotFound;
// one used already, replaced by a newer one or expired with
// store.ErrUsed, store.ErrRevoked or store.ErrExpired.
func (s *Service) FetchConfig(ctx context.Context, token string, render Renderer) ([]byte, *store.Machine, error) {
	var (
		body []byte
		out  *store.Machine
	)
	evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
		id, err := tx.UseConfigToken(ctx, HashToken(token))
		if err != nil {
			return err
		}
		m, err := tx.MachineByID(ctx, id)
		if err != nil {
			return err
		}
		if err := transition(m, lifecycle.Configure); err != nil {
			return err
		}
		if body, err = render(ctx, tx, m); err != nil {
			return fmt.Errorf("render config of machine %s: %w", m.ID, err)
		}
		m.ConfiguredAt = tx.Now()
		if err := tx.UpdateMachine(ctx, m); err != nil {
			return err
		}
		out = m
		return tx.Emit(ctx, m, &events.Configured{Hostname: m.Hostname, Role: m.Role})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fetch config: %w", err)
	}
	s.committed(evs)
	return body, out, nil
}
