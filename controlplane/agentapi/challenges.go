package agentapi

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// errTooManyChallenges: the table is full of unexpired challenges;
// errTooManySourceChallenges: those of one source are as many as it may hold.
var (
	errTooManyChallenges       = errors.New("too many attestation challenges outstanding")
	errTooManySourceChallenges = errors.New("too many attestation challenges outstanding from one source")
)

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
	// source is where the Register came from (see source()).
	source netip.Addr
	used   bool
}

// challenges holds the outstanding challenges in memory. A challenge is
// not machine state: it lives for a minute, a restart voids it (the agent
// registers again, as after any refusal), and keeping it out of the
// database saves a durable write per enrollment. Each is single use: take
// hands it out once; a used one stays, as a tombstone, until it expires,
// so that a replay is refused as one.
type challenges struct {
	// max and perSource bound the unused, unexpired challenges held, in
	// all and of one source (0: no bound).
	max, perSource int

	mu sync.Mutex
	m  map[string]*challenge
	// open counts the unused challenges, in all and by source.
	open     int
	bySource map[netip.Addr]int
	// queue holds the challenges in the order they expire (they all live
	// the same time), for pruning.
	queue []*challenge
}

// add stores c, first dropping the challenges that have expired.
func (cs *challenges) add(c *challenge, now time.Time) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.prune(now)
	if err := cs.room(c.source); err != nil {
		return err
	}
	if cs.m == nil {
		cs.m = make(map[string]*challenge)
		cs.bySource = make(map[netip.Addr]int)
	}
	cs.m[c.id] = c
	cs.queue = append(cs.queue, c)
	cs.open++
	cs.bySource[c.source]++
	return nil
}

// check reports, without holding a place, whether a challenge of src
// would be taken now: Register asks before it does any work.
func (cs *challenges) check(src netip.Addr, now time.Time) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.prune(now)
	return cs.room(src)
}

// room fails when the table, or src's share of it, is full.
func (cs *challenges) room(src netip.Addr) error {
	switch {
	case cs.max > 0 && cs.open >= cs.max:
		return fmt.Errorf("%w: %d in all, the most this control plane holds; retry in a few seconds", errTooManyChallenges, cs.max)
	case cs.perSource > 0 && cs.bySource[src] >= cs.perSource:
		return fmt.Errorf("%w: %d from %s, the most one source may hold; answer them or retry when they expire", errTooManySourceChallenges, cs.perSource, src)
	}
	return nil
}

// close counts c as no longer open (taken, or expired unused).
func (cs *challenges) close(c *challenge) {
	cs.open--
	if cs.bySource[c.source]--; cs.bySource[c.source] <= 0 {
		delete(cs.bySource, c.source)
	}
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
		if !c.used {
			cs.close(c)
		}
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
	cs.close(c)
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
