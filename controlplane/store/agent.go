package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/attestation/attestation/controlplane/lifecycle"
)

// Why a single-use credential cannot be used (besides ErrNotFound).
var (
	// ErrUsed: the credential was used already.
	ErrUsed = errors.New("already used")
	// ErrExpired: the credential is past its expiry.
	ErrExpired = errors.New("expired")
	// ErrRevoked: a newer credential replaced this one before it was used.
	ErrRevoked = errors.New("replaced by a newer one")
)

// Session is an agent's session credential as stored: by the hash of its
// token.
type Session struct {
	TokenHash     []byte
	MachineID     string
	EKFingerprint string
	CreatedAt     time.Time
	ExpiresAt     time.Time
}

// ReplaceSessions ends every session of the machine and stores s, so that
// a machine has one session: the one of its latest attestation.
func (t *Tx) ReplaceSessions(ctx context.Context, s *Session) error {
	if _, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE machine_id = ?`, s.MachineID); err != nil {
		return fmt.Errorf("end sessions of machine %s: %w", s.MachineID, err)
	}
	s.CreatedAt = t.now
	_, err := t.exec(ctx, `INSERT INTO agent_sessions (token_hash, machine_id, ek_fingerprint, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, s.TokenHash, s.MachineID, s.EKFingerprint, s.CreatedAt.UnixNano(), s.ExpiresAt.UnixNano())
	if err != nil {
		return fmt.Errorf("store session of machine %s: %w", s.MachineID, err)
	}
	return nil
}

// EndSessions ends every session of the machine.
func (t *Tx) EndSessions(ctx context.Context, machineID string) error {
	if _, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE machine_id = ?`, machineID); err != nil {
		return fmt.Errorf("end sessions of machine %s: %w", machineID, err)
	}
	return nil
}

// EndSession ends the session with the given token hash.
func (t *Tx) EndSession(ctx context.Context, tokenHash []byte) error {
	if _, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE token_hash = ?`, tokenHash); err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// RenewSession moves the expiry of a session that has not expired yet; it
// fails with ErrNotFound when there is no such session or it has expired.
func (t *Tx) RenewSession(ctx context.Context, tokenHash []byte, expires time.Time) error {
	res, err := t.exec(ctx, `UPDATE agent_sessions SET expires_at = ? WHERE token_hash = ? AND expires_at > ?`,
		expires.UnixNano(), tokenHash, t.now.UnixNano())
	if err != nil {
		return fmt.Errorf("renew session: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return nil
}

// GetSession returns the session with the given token hash, expired or
// not, or ErrNotFound.
func (s *Store) GetSession(ctx context.Context, tokenHash []byte) (*Session, error) {
	var (
		ss               Session
		created, expires int64
	)
	err := s.lookup(ctx, `SELECT token_hash, machine_id, ek_fingerprint, created_at, expires_at
		FROM agent_sessions WHERE token_hash = ?`, tokenHash).Scan(&ss.TokenHash, &ss.MachineID, &ss.EKFingerprint, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	ss.CreatedAt, ss.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &ss, nil
}

// InsertConfigToken stores a one-time config token of the machine by its
// ID and hash, revoking the machine's unused ones: only the newest token
// works.
func (t *Tx) InsertConfigToken(ctx context.Context, machineID, tokenID string, tokenHash []byte, expires time.Time) error {
	if err := t.RevokeConfigTokens(ctx, machineID); err != nil {
		return err
	}
	_, err := t.exec(ctx, `INSERT INTO config_tokens (token_hash, token_id, machine_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, tokenHash, tokenID, machineID, t.now.UnixNano(), expires.UnixNano())
	if err != nil {
		return fmt.Errorf("store config token of machine %s: %w", machineID, err)
	}
	return nil
}

// UsableConfigToken returns the ID and expiry of the machine's config
// token that is neither used nor revoked (expired or not), or ErrNotFound.
func (s *Store) UsableConfigToken(ctx context.Context, machineID string) (id string, expires time.Time, err error) {
	var exp int64
	err = s.lookup(ctx, `SELECT token_id, expires_at FROM config_tokens
		WHERE machine_id = ? AND used_at IS NULL AND revoked_at IS NULL
		ORDER BY created_at DESC LIMIT 1`, machineID).Scan(&id, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, ErrNotFound
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read config token of machine %s: %w", machineID, err)
	}
	return id, fromNanos(exp), nil
}

// RevokeConfigTokens revokes the machine's unused config tokens.
func (t *Tx) RevokeConfigTokens(ctx context.Context, machineID string) error {
	if _, err := t.exec(ctx, `UPDATE config_tokens SET revoked_at = ?
		WHERE machine_id = ? AND used_at IS NULL AND revoked_at IS NULL`, t.now.UnixNano(), machineID); err != nil {
		return fmt.Errorf("revoke config tokens of machine %s: %w", machineID, err)
	}
	return nil
}

// UseConfigToken marks a config token used, once, and returns its
// machine's ID. It fails with ErrNotFound (no such token), ErrUsed,
// ErrRevoked or ErrExpired. The check and the mark are one UPDATE: of any
// number of concurrent calls for one token, exactly one succeeds.
func (t *Tx) UseConfigToken(ctx context.Context, tokenHash []byte) (string, error) {
	var id string
	err := t.queryRow(ctx, `UPDATE config_tokens SET used_at = ?
		WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?
		RETURNING machine_id`, t.now.UnixNano(), tokenHash, t.now.UnixNano()).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("use config token: %w", err)
	}
	var used, revoked sql.NullInt64
	err = t.queryRow(ctx, `SELECT used_at, revoked_at FROM config_tokens WHERE token_hash = ?`, tokenHash).Scan(&used, &revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", ErrNotFound
	case err != nil:
		return "", fmt.Errorf("use config token: %w", err)
	case used.Valid:
		return "", ErrUsed
	case revoked.Valid:
		return "", ErrRevoked
	}
	return "", ErrExpired
}

// ConfigTemplate is the config template of a role.
type ConfigTemplate struct {
	Role     string
	Template string
	// SchematicID is the role's default schematic ("": none).
	SchematicID string
	UpdatedAt   time.Time
}

// PutConfigTemplate creates or replaces the template of c.Role.
func (t *Tx) PutConfigTemplate(ctx context.Context, c *ConfigTemplate) error {
	c.UpdatedAt = t.now
	_, err := t.exec(ctx, `INSERT INTO config_templates (role, template, schematic_id, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (role) DO UPDATE SET template = excluded.template, schematic_id = excluded.schematic_id, updated_at = excluded.updated_at`,
		c.Role, c.Template, c.SchematicID, c.UpdatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("store config template of role %s: %w", c.Role, err)
	}
	return nil
}

// ConfigTemplate returns the template of a role in this transaction, or
// ErrNotFound.
func (t *Tx) ConfigTemplate(ctx context.Context, role string) (*ConfigTemplate, error) {
	return scanTemplate(t.queryRow(ctx, `SELECT role, template, schematic_id, updated_at FROM config_templates WHERE role = ?`, role))
}

// DeleteConfigTemplate removes the template of a role and returns it, or
// fails with ErrNotFound.
func (t *Tx) DeleteConfigTemplate(ctx context.Context, role string) (*ConfigTemplate, error) {
	c, err := scanTemplate(t.queryRow(ctx, `DELETE FROM config_templates WHERE role = ? RETURNING role, template, schematic_id, updated_at`, role))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("delete config template of role %s: %w", role, err)
	}
	return c, err
}

// GetConfigTemplate returns the template of a role, or ErrNotFound.
func (s *Store) GetConfigTemplate(ctx context.Context, role string) (*ConfigTemplate, error) {
	return scanTemplate(s.lookup(ctx, `SELECT role, template, schematic_id, updated_at FROM config_templates WHERE role = ?`, role))
}

// ListConfigTemplates returns every template, ordered by role.
func (s *Store) ListConfigTemplates(ctx context.Context) ([]*ConfigTemplate, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT role, template, schematic_id, updated_at FROM config_templates ORDER BY role`)
	if err != nil {
		return nil, fmt.Errorf("list config templates: %w", err)
	}
	defer rows.Close()
	var out []*ConfigTemplate
	for rows.Next() {
		c, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list config templates: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func scanTemplate(row scanner) (*ConfigTemplate, error) {
	var (
		c       ConfigTemplate
		updated int64
	)
	err := row.Scan(&c.Role, &c.Template, &c.SchematicID, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	c.UpdatedAt = fromNanos(updated)
	return &c, nil
}

// MachinesWithSMBIOSUUID returns the machines that reported the SMBIOS
// UUID, oldest first.
func (t *Tx) MachinesWithSMBIOSUUID(ctx context.Context, uuid string) ([]*Machine, error) {
	rows, err := t.query(ctx, `SELECT `+machineColumns+` FROM machines WHERE smbios_uuid = ?
		ORDER BY registered_at, id`, uuid)
	if err != nil {
		return nil, fmt.Errorf("find machines by SMBIOS UUID: %w", err)
	}
	defer rows.Close()
	var out []*Machine
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, fmt.Errorf("find machines by SMBIOS UUID: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// SilentMachines returns the attested and provisioned machines whose last
// sign of life (heartbeat, else attestation) is before deadline and for
// which no missed heartbeat has been reported since, at most limit.
func (s *Store) SilentMachines(ctx context.Context, deadline time.Time, limit int) ([]*Machine, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+machineColumns+` FROM machines
		WHERE state IN (?, ?) AND heartbeat_missed_at IS NULL
		AND COALESCE(last_heartbeat_at, attested_at) < ?
		ORDER BY id LIMIT ?`, lifecycle.Attested, lifecycle.Provisioned, deadline.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("find machines that missed their heartbeat: %w", err)
	}
	defer rows.Close()
	var out []*Machine
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, fmt.Errorf("find machines that missed their heartbeat: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteStaleCredentials deletes the sessions and the used attestation
// challenges that expired before cutoff (a replay of such a challenge is
// refused as expired), and the config tokens that expired before
// tokenCutoff (an expired token answers 410 Gone until it is deleted, then
// 404); it returns how many rows went.
func (t *Tx) DeleteStaleCredentials(ctx context.Context, cutoff, tokenCutoff time.Time) (int64, error) {
	var total int64
	for _, d := range []struct {
		q      string
		cutoff time.Time
	}{
		{`DELETE FROM agent_sessions WHERE expires_at < ?`, cutoff},
		{`DELETE FROM used_challenges WHERE expires_at < ?`, cutoff},
		{`DELETE FROM config_tokens WHERE expires_at < ?`, tokenCutoff},
	} {
		res, err := t.exec(ctx, d.q, d.cutoff.UnixNano())
		if err != nil {
			return total, fmt.Errorf("delete stale credentials: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
