package store

import (
	"context"
	"fmt"
	"time"
)

// UseChallenge records that the attestation challenge id, which expires
// at expires, has been answered; it fails with ErrUsed when it was
// answered before, on this instance or any other over the database. Run
// in the transaction that records the answer, it adds no commit; of any
// number of concurrent uses of one challenge, one succeeds.
func (t *Tx) UseChallenge(ctx context.Context, id []byte, expires time.Time) error {
	res, err := t.exec(ctx, `INSERT INTO used_challenges (expires_at, id) VALUES (?, ?) ON CONFLICT DO NOTHING`,
		expires.UnixNano(), id)
	if err != nil {
		return fmt.Errorf("record the use of challenge %x: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("record the use of challenge %x: %w", id, err)
	} else if n == 0 {
		return ErrUsed
	}
	return nil
}
