package agentapi

import (
	"fmt"
	"sync"
	"time"

	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// maxChallenges bounds the challenges outstanding at once: with the
// default 60 s expiry, 100,000 allow a sustained 1,600 registrations a
// second, and hold at most a few tens of MB.
const maxChallenges = 100_000

// errTooManyChallenges: the table is full of unexpired challenges.
var errTooManyChallenges = fmt.Errorf("%d attestation challenges are outstanding, the most this control plane holds: retry in a few seconds", maxChallenges)

// challenge is an outstanding credential-activation challenge. Its secret
// and nonce are kept only as SHA-256 hashes.
type challenge struct {
	id        string
	machineID string
	// tpm is false for a machine registered without a TPM (where policy
	// allows it): then there is no AK, secret or nonce.
	tpm        bool
	akPublic   []byte
	ak         *attest.AK
	secretHash []byte
	nonceHash  []byte
	pcrs       []int
	expires    time.Time
	// reported is what the agent said about its machine when it
	// registered; it is recorded only once the machine has proved itself.
	reported machines.SelfRegistration
	used     bool
}

// challenges holds the outstanding challenges in memory. A challenge is
// not machine state: it lives for a minute, a restart voids it (the agent
// registers again, as after any refusal), and keeping it out of the
// database saves a durable write per enrollment. Each is single use: take
// hands it out once; a used one stays, as a tombstone, until it expires,
// so that a replay is refused as one.
type challenges struct {
	mu sync.Mutex
	m  map[string]*challenge
	// queue holds the challenges in the order they expire (they all live
	// the same time), for pruning.
	queue []*challenge
}

// add stores c, first dropping the challenges that have expired.
func (cs *challenges) add(c *challenge, now time.Time) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.prune(now)
	if len(cs.m) >= maxChallenges {
		return errTooManyChallenges
	}
	if cs.m == nil {
		cs.m = make(map[string]*challenge)
	}
	cs.m[c.id] = c
	cs.queue = append(cs.queue, c)
	return nil
}

// prune forgets expired challenges. The queue is in expiry order as long
// as the TTL does not change; an entry out of order only waits longer.
func (cs *challenges) prune(now time.Time) {
	n := 0
	for _, c := range cs.queue {
		if now.Before(c.expires) {
			break
		}
		delete(cs.m, c.id)
		n++
	}
	if n > 0 {
		clear(cs.queue[:n])
		cs.queue = cs.queue[n:]
	}
}

// take hands out challenge id for answering, once: it fails with
// store.ErrNotFound for an unknown (or long expired) challenge, and with
// store.ErrUsed for one taken before or store.ErrExpired for one past its
// expiry, returning the challenge then too (to say whose it was). Of any
// number of concurrent takes of one challenge, one succeeds.
func (cs *challenges) take(id string, now time.Time) (*challenge, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.m[id]
	switch {
	case !ok:
		return nil, store.ErrNotFound
	case c.used:
		return c, store.ErrUsed
	}
	c.used = true
	if !now.Before(c.expires) {
		return c, store.ErrExpired
	}
	return c, nil
}

// len is the number of challenges held, used or not, expired or not.
func (cs *challenges) len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}
