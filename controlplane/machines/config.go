package machines

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

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

// mintConfigURL stores a new one-time config token of m (revoking its
// unused ones) and returns its URL; it returns "" when the Service mints
// no config tokens.
func (s *Service) mintConfigURL(ctx context.Context, tx *store.Tx, m *store.Machine) (string, error) {
	if s.configBase == "" {
		return "", nil
	}
	tok, hash, err := NewToken()
	if err != nil {
		return "", err
	}
	if err := tx.InsertConfigToken(ctx, m.ID, hash, tx.Now().Add(s.configTTL)); err != nil {
		return "", err
	}
	return s.configBase + tok, nil
}

// ConfigURL returns a fresh one-time config URL for a provisioned machine
// whose config has not been fetched yet, revoking the URLs minted before
// (only their hashes are kept, so an earlier one cannot be handed out
// again). It returns "" and no error when the machine is not provisioned
// or has fetched its config already.
func (s *Service) ConfigURL(ctx context.Context, id string) (string, error) {
	id = NormalizeID(id)
	m, err := s.store.GetMachine(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = ErrNotFound
		}
		return "", fmt.Errorf("config URL of machine %s: %w", id, err)
	}
	if m.State != lifecycle.Provisioned || !m.ConfiguredAt.IsZero() || s.configBase == "" {
		return "", nil
	}
	var url string
	_, err = s.update(ctx, "config URL of", id, func(tx *store.Tx, m *store.Machine) error {
		url = ""
		if m.State != lifecycle.Provisioned || !m.ConfiguredAt.IsZero() {
			return nil
		}
		var err error
		url, err = s.mintConfigURL(ctx, tx, m)
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
