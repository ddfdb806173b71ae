package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// NodeCertificate is a node certificate as recorded: the certificate
// itself is the agent's; the daemon keeps what identifies it.
type NodeCertificate struct {
	// Serial is lower-case hex.
	Serial    string
	MachineID string
	// KeyName is the TPM name of the certified key.
	KeyName  []byte
	IssuedAt time.Time
	NotAfter time.Time
	// SupersededAt is when a newer certificate of the machine was issued;
	// RevokedAt when the machine was revoked. Zero: not (yet).
	SupersededAt time.Time
	RevokedAt    time.Time
}

const nodeCertificateColumns = `serial, machine_id, key_name, issued_at, not_after, superseded_at, revoked_at`

func scanNodeCertificate(row scanner) (*NodeCertificate, error) {
	var (
		c                   NodeCertificate
		issued, notAfter    int64
		superseded, revoked sql.NullInt64
	)
	err := row.Scan(&c.Serial, &c.MachineID, &c.KeyName, &issued, &notAfter, &superseded, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	c.IssuedAt, c.NotAfter = fromNanos(issued), fromNanos(notAfter)
	c.SupersededAt, c.RevokedAt = fromNull(superseded), fromNull(revoked)
	return &c, nil
}

// LiveNodeCertificate returns the machine's live certificate: neither
// superseded nor revoked, and not expired at the transaction's time; or
// ErrNotFound.
func (t *Tx) LiveNodeCertificate(ctx context.Context, machineID string) (*NodeCertificate, error) {
	c, err := scanNodeCertificate(t.queryRow(ctx, `SELECT `+nodeCertificateColumns+` FROM node_certificates
		WHERE machine_id = ? AND superseded_at IS NULL AND revoked_at IS NULL AND not_after > ?
		ORDER BY issued_at DESC LIMIT 1`, machineID, t.now.UnixNano()))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("read node certificate of machine %s: %w", machineID, err)
	}
	return c, err
}

// InsertNodeCertificate records c as issued at the transaction's time and
// supersedes the machine's other certificates that are neither
// superseded nor revoked.
func (t *Tx) InsertNodeCertificate(ctx context.Context, c *NodeCertificate) error {
	if _, err := t.exec(ctx, `UPDATE node_certificates SET superseded_at = ?
		WHERE machine_id = ? AND superseded_at IS NULL AND revoked_at IS NULL`, t.now.UnixNano(), c.MachineID); err != nil {
		return fmt.Errorf("supersede node certificates of machine %s: %w", c.MachineID, err)
	}
	c.IssuedAt = t.now
	_, err := t.exec(ctx, `INSERT INTO node_certificates (serial, machine_id, key_name, issued_at, not_after)
		VALUES (?, ?, ?, ?, ?)`, c.Serial, c.MachineID, c.KeyName, c.IssuedAt.UnixNano(), c.NotAfter.UnixNano())
	if err != nil {
		return fmt.Errorf("record node certificate %s of machine %s: %w", c.Serial, c.MachineID, err)
	}
	return nil
}

// RevokeNodeCertificates revokes the machine's certificates that are not
// revoked already, superseded ones included: they are valid until they
// expire.
func (t *Tx) RevokeNodeCertificates(ctx context.Context, machineID string) error {
	if _, err := t.exec(ctx, `UPDATE node_certificates SET revoked_at = ?
		WHERE machine_id = ? AND revoked_at IS NULL`, t.now.UnixNano(), machineID); err != nil {
		return fmt.Errorf("revoke node certificates of machine %s: %w", machineID, err)
	}
	return nil
}

// NodeCertificates returns the machine's certificates, newest first.
func (s *Store) NodeCertificates(ctx context.Context, machineID string) ([]*NodeCertificate, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+nodeCertificateColumns+` FROM node_certificates
		WHERE machine_id = ? ORDER BY issued_at DESC, serial`, machineID)
	if err != nil {
		return nil, fmt.Errorf("list node certificates of machine %s: %w", machineID, err)
	}
	defer rows.Close()
	var out []*NodeCertificate
	for rows.Next() {
		c, err := scanNodeCertificate(rows)
		if err != nil {
			return nil, fmt.Errorf("list node certificates of machine %s: %w", machineID, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// NodeCertificateByKey returns the newest certificate issued to the key
// with the given TPM name, or ErrNotFound.
func (s *Store) NodeCertificateByKey(ctx context.Context, keyName []byte) (*NodeCertificate, error) {
	c, err := scanNodeCertificate(s.lookup(ctx, `SELECT `+nodeCertificateColumns+` FROM node_certificates
		WHERE key_name = ? ORDER BY issued_at DESC LIMIT 1`, keyName))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("find node certificate by key: %w", err)
	}
	return c, err
}

// NodeCertificateBySerial returns the certificate with serial (lower-case
// hex), or ErrNotFound.
func (s *Store) NodeCertificateBySerial(ctx context.Context, serial string) (*NodeCertificate, error) {
	c, err := scanNodeCertificate(s.lookup(ctx, `SELECT `+nodeCertificateColumns+` FROM node_certificates
		WHERE serial = ?`, serial))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("find node certificate %s: %w", serial, err)
	}
	return c, err
}
