package agentapi

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
)

// A challenge is not kept by the control plane: Register seals it into a
// token, the challenge_id the agent sends back with its answer, and
// Attest opens it. Any instance that holds the key opens any instance's
// challenges, a restart voids none, and an outstanding challenge costs
// the control plane no memory and no write. The token is encrypted and
// authenticated (AES-256-GCM), so the agent can neither read nor change
// it; the secret and the nonce are in it only as SHA-256 hashes all the
// same. Single use is the database's: Attest records the challenge's ID
// in the transaction that records the attestation (store.Tx.UseChallenge),
// where a replay, on any instance, finds it.
//
// A token is base64url (no padding) of
//
//	version (1) || key ID (1) || GCM nonce (12) || AES-256-GCM(plaintext)
//
// the first two bytes authenticated as additional data; the plaintext is
// marshal's encoding.

// ChallengeKeySize is the size of the key challenges are sealed with.
const ChallengeKeySize = 32

const (
	tokenVersion    = 1
	challengeIDSize = 16
	// maxToken bounds a token, as AttestRequest.challenge_id is bounded:
	// what Register takes in (the AK, the reported hardware) bounds what
	// is sealed well below it.
	maxToken = 8192
	// challengeKeyInfo and keyIDLabel separate the challenge key from
	// other keys derived from the same secret, and its ID from it.
	challengeKeyInfo = "attestation challenge seal v1"
	keyIDLabel       = "attestation challenge key id\x00"
)

// Why a challenge_id does not open.
var (
	// errUnknownChallenge: not a token at all, one altered, or one of a
	// version this control plane does not know.
	errUnknownChallenge = errors.New("not a challenge this control plane issued")
	// errOtherKey: a token sealed under another key: another control
	// plane's, or an instance that does not share this one's key.
	errOtherKey = errors.New("challenge sealed under another key: another control plane issued it, or its instances do not share their config token key")
	// errUnreadableChallenge: sealed under this key, but not in a form
	// this control plane reads (or with an AK it no longer accepts).
	errUnreadableChallenge = errors.New("a challenge this control plane sealed but cannot read")
)

// DeriveChallengeKey derives the key challenges are sealed with from a
// secret the instances of one control plane share (the daemon's config
// token key), so that they open each other's challenges.
func DeriveChallengeKey(secret []byte) ([]byte, error) {
	if len(secret) < ChallengeKeySize {
		return nil, fmt.Errorf("challenge key: want a secret of at least %d bytes, got %d", ChallengeKeySize, len(secret))
	}
	return hkdf.Key(sha256.New, secret, nil, challengeKeyInfo, ChallengeKeySize)
}

// challenge is a credential-activation challenge: what Attest needs to
// check the answer and record the machine.
type challenge struct {
	// id is random: the key of the challenge's use in the database.
	id        []byte
	machineID string
	// tpm is false for a machine registered without a TPM (where policy
	// allows it): then there is no AK, secret or nonce.
	tpm        bool
	akPublic   []byte
	secretHash []byte
	nonceHash  []byte
	// pcrs are the PCRs to quote, in increasing order.
	pcrs    []int
	expires time.Time
	// reported is what the agent said about its machine when it
	// registered; it is recorded only once the machine has proved itself.
	reported machines.SelfRegistration

	// ak is akPublic parsed (nil without a TPM); not sealed.
	ak *attest.AK
}

// idString is the challenge's ID as logs show it.
func (c *challenge) idString() string { return hex.EncodeToString(c.id) }

// sealer seals challenges into tokens and opens them.
type sealer struct {
	aead  cipher.AEAD
	keyID byte
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != ChallengeKeySize {
		return nil, fmt.Errorf("challenge key: want %d bytes, got %d", ChallengeKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("challenge key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("challenge key: %w", err)
	}
	id := sha256.Sum256(append([]byte(keyIDLabel), key...))
	return &sealer{aead: aead, keyID: id[0]}, nil
}

// seal returns c as a token.
func (s *sealer) seal(c *challenge) (string, error) {
	head := 2 + s.aead.NonceSize()
	plain := c.marshal()
	raw := make([]byte, head, head+len(plain)+s.aead.Overhead())
	raw[0], raw[1] = tokenVersion, s.keyID
	nonce := raw[2:head]
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal challenge: %w", err)
	}
	raw = s.aead.Seal(raw, nonce, plain, raw[:2])
	token := base64.RawURLEncoding.EncodeToString(raw)
	if len(token) > maxToken {
		return "", fmt.Errorf("seal challenge: a token of %d bytes, more than the %d an AttestRequest carries", len(token), maxToken)
	}
	return token, nil
}

// open returns the challenge sealed in token. It fails with
// errUnknownChallenge, errOtherKey or errUnreadableChallenge; it does not
// look at the expiry.
func (s *sealer) open(token string) (*challenge, error) {
	head := 2 + s.aead.NonceSize()
	if len(token) > maxToken || base64.RawURLEncoding.DecodedLen(len(token)) < head+s.aead.Overhead() {
		return nil, errUnknownChallenge
	}
	// The decoder skips line breaks: the length is checked again.
	raw, err := base64.RawURLEncoding.DecodeString(token)
	switch {
	case err != nil || len(raw) < head+s.aead.Overhead() || raw[0] != tokenVersion:
		return nil, errUnknownChallenge
	case raw[1] != s.keyID:
		return nil, errOtherKey
	}
	plain, err := s.aead.Open(raw[head:head], raw[2:head], raw[head:], raw[:2])
	if err != nil {
		return nil, errUnknownChallenge
	}
	c, err := unmarshalChallenge(plain)
	if err == nil && c.tpm {
		// Parsed as Register parsed it: a control plane with other
		// rules for AKs (a newer one) refuses the old challenge.
		c.ak, err = attest.ParseAKPublic(c.akPublic)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreadableChallenge, err)
	}
	return c, nil
}

// flagTPM is the one flag of the encoding.
const flagTPM = 1

// marshal encodes c: its ID, its expiry (Unix nanoseconds, 8 bytes big
// endian), a flags byte, the PCRs as a 32-bit mask (big endian), then
// fields each prefixed by its length (uvarint): machine ID, AK public,
// secret hash, nonce hash, and the report (EK fingerprint, IP, SMBIOS
// UUID, serial, product), then the number of MACs (uvarint) and each MAC
// as a field.
func (c *challenge) marshal() []byte {
	r, hw := c.reported, c.reported.Hardware
	b := make([]byte, 0, 192+len(c.akPublic)+len(hw.Serial)+len(hw.Product)+24*len(hw.MACs))
	b = append(b, c.id...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.expires.UnixNano()))
	var flags byte
	if c.tpm {
		flags |= flagTPM
	}
	b = append(b, flags)
	var mask uint32
	for _, i := range c.pcrs {
		mask |= 1 << i
	}
	b = binary.BigEndian.AppendUint32(b, mask)
	b = appendField(b, c.machineID)
	b = appendField(b, c.akPublic)
	b = appendField(b, c.secretHash)
	b = appendField(b, c.nonceHash)
	for _, f := range []string{r.EKFingerprint, r.IP, hw.SMBIOSUUID, hw.Serial, hw.Product} {
		b = appendField(b, f)
	}
	b = binary.AppendUvarint(b, uint64(len(hw.MACs)))
	for _, mac := range hw.MACs {
		b = appendField(b, mac)
	}
	return b
}

func appendField[F ~string | ~[]byte](b []byte, f F) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// unmarshalChallenge decodes what marshal encoded.
func unmarshalChallenge(p []byte) (*challenge, error) {
	d := decoder{b: p}
	c := &challenge{id: d.next(challengeIDSize)}
	expires := d.next(8)
	flags := d.next(1)
	mask := d.next(4)
	c.machineID = string(d.field())
	c.akPublic = d.field()
	c.secretHash = d.field()
	c.nonceHash = d.field()
	r := &c.reported
	r.EKFingerprint, r.IP = string(d.field()), string(d.field())
	r.Hardware = events.Hardware{SMBIOSUUID: string(d.field()), Serial: string(d.field()), Product: string(d.field())}
	// Each MAC takes a byte at least: a count beyond what is left is no
	// allocation.
	if n := d.uvarint(); n > uint64(len(d.b)) {
		d.fail()
	} else if n > 0 {
		r.Hardware.MACs = make([]string, n)
		for i := range r.Hardware.MACs {
			r.Hardware.MACs[i] = string(d.field())
		}
	}
	switch {
	case d.err != nil:
		return nil, d.err
	case len(d.b) > 0:
		return nil, fmt.Errorf("challenge: %d bytes after the end", len(d.b))
	case flags[0]&^flagTPM != 0:
		return nil, fmt.Errorf("challenge: unknown flags %#x", flags[0])
	}
	m := binary.BigEndian.Uint32(mask)
	if m>>(attest.MaxPCR+1) != 0 {
		return nil, fmt.Errorf("challenge: PCR mask %#x beyond PCR %d", m, attest.MaxPCR)
	}
	c.pcrs = make([]int, 0, bits.OnesCount32(m))
	for i := range attest.MaxPCR + 1 {
		if m&(1<<i) != 0 {
			c.pcrs = append(c.pcrs, i)
		}
	}
	c.tpm = flags[0]&flagTPM != 0
	r.TPMAvailable = c.tpm
	c.expires = time.Unix(0, int64(binary.BigEndian.Uint64(expires))).UTC()
	return c, nil
}

// decoder reads marshal's encoding; after the first error it reads
// nothing and keeps that error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errors.New("challenge: truncated")
	}
	d.b = nil
}

// next returns the next n bytes (a slice of the input).
func (d *decoder) next(n int) []byte {
	if d.err != nil || n > len(d.b) {
		d.fail()
		return make([]byte, n)
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if d.err != nil || n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// field returns the next length-prefixed field.
func (d *decoder) field() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	return d.next(int(n))
}
