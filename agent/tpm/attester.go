package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Options choose the key algorithms. The zero value reads the RSA EK and
// makes an ECC AK.
type Options struct {
	// EK is the endorsement key to use: RSA (default) or ECC. Most TPMs
	// ship an RSA EK certificate; some ship only ECC.
	EK KeyType
	// AK is the attestation key type: ECC (default) or RSA.
	AK KeyType
}

// Attester holds a TPM with its EK and AK loaded. Its methods are safe for
// concurrent use; the TPM runs one command at a time.
type Attester struct {
	mu     sync.Mutex
	tpm    transport.TPMCloser
	ek     EK
	ak     AK
	ekH    loaded
	akH    loaded
	closed bool

	// node is the node key, made by NodeKey on first use.
	node *NodeKey
}

// New reads the EK and its certificate and creates the AK. The Attester
// owns t: Close flushes the keys and closes it. A certificate that cannot
// be read is reported in EK.CertificateError, not as an error of New.
func New(t transport.TPMCloser, opts Options) (*Attester, error) {
	if opts.EK == "" {
		opts.EK = RSA
	}
	if opts.AK == "" {
		opts.AK = ECC
	}
	ek, ekH, err := readEK(t, opts.EK)
	if err != nil {
		return nil, err
	}
	ek.Certificate, ek.CertificateError = readEKCertificate(t, opts.EK)
	ak, akH, err := createAK(t, opts.AK)
	if err != nil {
		flush(t, ekH)
		return nil, err
	}
	return &Attester{tpm: t, ek: ek, ak: ak, ekH: ekH, akH: akH}, nil
}

// EK returns the endorsement key and its certificate.
func (a *Attester) EK() EK { return a.ek }

// AK returns the attestation key.
func (a *Attester) AK() AK { return a.ak }

// ekPolicy satisfies the standard EK auth policy, PolicySecret(endorsement).
func ekPolicy(t transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.TPMRHEndorsement,
		PolicySession: session,
		NonceTPM:      nonceTPM,
	}.Execute(t)
	return err
}

// ActivateCredential recovers the secret of a challenge made with
// TPM2_MakeCredential or its software equivalent. credentialBlob is the
// contents of the TPM2B_ID_OBJECT and encryptedSecret the contents of the
// TPM2B_ENCRYPTED_SECRET (both without their 2-byte size). The TPM
// releases the secret only if the credential was made for this EK and bound
// to this AK's name.
func (a *Attester) ActivateCredential(credentialBlob, encryptedSecret []byte) ([]byte, error) {
	if len(credentialBlob) == 0 || len(encryptedSecret) == 0 {
		return nil, errors.New("activate credential: empty credential blob or encrypted secret")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("activate credential: attester is closed")
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: a.akH.handle, Name: a.akH.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle: tpm2.AuthHandle{
			Handle: a.ekH.handle,
			Name:   a.ekH.name,
			Auth:   tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy),
		},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: credentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encryptedSecret},
	}.Execute(a.tpm)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	return bytes.Clone(rsp.CertInfo.Buffer), nil
}

// MaxPCR is the highest PCR index Quote accepts (PC Client TPMs have 24).
const MaxPCR = 23

// quoteAttempts bounds retries when a PCR is extended between reading the
// values and quoting them.
const quoteAttempts = 3

// Quote signs the SHA-256 PCRs pcrs with the AK, with nonce as qualifying
// data. quote is the TPMS_ATTEST structure (the contents of the TPM2B_ATTEST
// the TPM returned), signature the TPMT_SIGNATURE (tpm2.Marshal encoding),
// and pcrValues the SHA-256 value of each quoted PCR, consistent with the
// digest in the quote.
func (a *Attester) Quote(nonce []byte, pcrs []int) (quote, signature []byte, pcrValues map[int][]byte, err error) {
	if len(nonce) == 0 {
		return nil, nil, nil, errors.New("quote: empty nonce")
	}
	if len(pcrs) == 0 {
		return nil, nil, nil, errors.New("quote: no PCRs selected")
	}
	sel := slices.Clone(pcrs)
	slices.Sort(sel)
	sel = slices.Compact(sel)
	idx := make([]uint, len(sel))
	for i, p := range sel {
		if p < 0 || p > MaxPCR {
			return nil, nil, nil, fmt.Errorf("quote: PCR %d out of range 0..%d", p, MaxPCR)
		}
		idx[i] = uint(p)
	}
	selection := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, nil, nil, errors.New("quote: attester is closed")
	}
	for range quoteAttempts {
		values, err := readPCRs(a.tpm, sel)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("quote: %w", err)
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: a.akH.handle, Name: a.akH.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      selection,
		}.Execute(a.tpm)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("quote: %w", err)
		}
		attest, err := rsp.Quoted.Contents()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("quote: parse TPMS_ATTEST: %w", err)
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("quote: parse TPMS_QUOTE_INFO: %w", err)
		}
		h := sha256.New()
		for _, p := range sel {
			h.Write(values[p])
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			continue // a PCR changed between PCR_Read and Quote
		}
		return bytes.Clone(rsp.Quoted.Bytes()), tpm2.Marshal(rsp.Signature), values, nil
	}
	return nil, nil, nil, fmt.Errorf("quote: PCRs kept changing during %d attempts", quoteAttempts)
}

// readPCRs reads SHA-256 PCRs; the TPM returns at most 8 per PCR_Read.
func readPCRs(t transport.TPM, pcrs []int) (map[int][]byte, error) {
	values := make(map[int][]byte, len(pcrs))
	want := slices.Clone(pcrs)
	for len(want) > 0 {
		idx := make([]uint, len(want))
		for i, p := range want {
			idx[i] = uint(p)
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash:      tpm2.TPMAlgSHA256,
			PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
		}}}}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read PCRs %v: %w", want, err)
		}
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for i, b := range s.PCRSelect {
				for bit := range 8 {
					if b&(1<<bit) != 0 {
						got = append(got, i*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("read PCRs %v: the TPM returned none (is the SHA-256 bank active?)", want)
		}
		for i, p := range got {
			values[p] = bytes.Clone(rsp.PCRValues.Digests[i].Buffer)
		}
		want = slices.DeleteFunc(want, func(p int) bool { _, ok := values[p]; return ok })
	}
	return values, nil
}

// Close flushes the keys this Attester created and closes the TPM. It is
// safe to call more than once.
func (a *Attester) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	var node error
	if a.node != nil {
		node = flush(a.tpm, a.node.h)
	}
	return errors.Join(node, flush(a.tpm, a.akH), flush(a.tpm, a.ekH), a.tpm.Close())
}
