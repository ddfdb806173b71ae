package agentapi

import (
	"bytes"
	"sync"
	"time"

	"github.com/attestation/attestation/controlplane/attest"
)

// akMemoSize bounds how many parsed AKs the memo holds: beyond it, Attest
// parses the AK again, as it does after a restart.
const akMemoSize = 4096

// akMemo keeps the AK that Register parsed for a challenge until Attest
// answers the challenge or the challenge expires, so that Attest does not
// parse it again: the reflection-based TPM decoding is a tenth of the
// daemon's CPU per enrollment. It only saves work: Attest uses an entry
// only when its bytes are the AK stored with the challenge, and parses
// the stored AK otherwise.
type akMemo struct {
	mu sync.Mutex
	m  map[string]akMemoEntry // by challenge ID
}

type akMemoEntry struct {
	public  []byte
	ak      *attest.AK
	expires time.Time
}

// put remembers the AK of a challenge.
func (c *akMemo) put(challengeID string, public []byte, ak *attest.AK, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]akMemoEntry)
	}
	if len(c.m) >= akMemoSize {
		now := time.Now()
		for id, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, id)
			}
		}
		if len(c.m) >= akMemoSize {
			return
		}
	}
	c.m[challengeID] = akMemoEntry{public: public, ak: ak, expires: expires}
}

// take returns the AK of a challenge and forgets it; it parses public
// when the memo has no AK with exactly these bytes.
func (c *akMemo) take(challengeID string, public []byte) (*attest.AK, error) {
	c.mu.Lock()
	e, ok := c.m[challengeID]
	delete(c.m, challengeID)
	c.mu.Unlock()
	if ok && bytes.Equal(e.public, public) {
		return e.ak, nil
	}
	return attest.ParseAKPublic(public)
}
