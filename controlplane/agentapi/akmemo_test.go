package agentapi

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/attest"
)

func TestAKMemo(t *testing.T) {
	var c akMemo
	ak := &attest.AK{}
	later := time.Now().Add(time.Minute)
	c.put("c1", []byte("ak one"), ak, later)
	c.put("c2", []byte("ak two"), ak, later)

	// Another AK than the one remembered for the challenge is parsed
	// (and these bytes are no AK).
	if got, err := c.take("c2", []byte("not ak two")); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("take with other bytes: got %v, %v, want ErrMalformed", got, err)
	}
	if got, err := c.take("c1", []byte("ak one")); err != nil || got != ak {
		t.Errorf("take: got %p, %v, want the remembered AK %p", got, err, ak)
	}
	// Taken once: the next take parses.
	if _, err := c.take("c1", []byte("ak one")); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("second take: got %v, want ErrMalformed", err)
	}

	// Full: expired entries make room; unexpired ones are kept.
	for i := range akMemoSize {
		c.put(fmt.Sprint(i), nil, ak, time.Now().Add(-time.Second))
	}
	c.put("fresh", []byte("fresh"), ak, later)
	if got, err := c.take("fresh", []byte("fresh")); err != nil || got != ak {
		t.Errorf("take after sweeping expired entries: got %p, %v, want %p", got, err, ak)
	}
	for i := range akMemoSize {
		c.put(fmt.Sprint(i), nil, ak, later)
	}
	c.put("over", []byte("over"), ak, later)
	if len(c.m) > akMemoSize {
		t.Errorf("got %d entries, want at most %d", len(c.m), akMemoSize)
	}
}
