//go:build cgo

package ekrsa

/*
#cgo CFLAGS: -DOPENSSL_SUPPRESS_DEPRECATED
#cgo LDFLAGS: -lcrypto
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

static EVP_PKEY *ekrsa_load(const unsigned char *der, long n) {
	EVP_PKEY *k = d2i_PrivateKey(EVP_PKEY_RSA, NULL, &der, n);
	if (k == NULL) return NULL;
	// No blinding: it guards a key against timing attacks, and these
	// keys are a load generator's. Blinding is set up per thread on first
	// use, which made the first decryption with each of a thousand keys
	// cost twice the next.
	RSA_set_flags((RSA *)EVP_PKEY_get0_RSA(k), RSA_FLAG_NO_BLINDING);
	return k;
}

// ekrsa_ctx prepares a decryption context for RSA-OAEP with SHA-256 for
// both the label hash and MGF1, under label.
static EVP_PKEY_CTX *ekrsa_ctx(EVP_PKEY *k, const unsigned char *label, size_t labellen) {
	unsigned char *l = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
	if (ctx == NULL) return NULL;
	if (EVP_PKEY_decrypt_init(ctx) <= 0) goto fail;
	if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0) goto fail;
	if (EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0) goto fail;
	if (EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0) goto fail;
	if (labellen > 0) {
		l = OPENSSL_malloc(labellen);
		if (l == NULL) goto fail;
		memcpy(l, label, labellen);
		if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, l, (int)labellen) <= 0) { OPENSSL_free(l); goto fail; }
	}
	return ctx;
fail:
	ERR_clear_error();
	EVP_PKEY_CTX_free(ctx);
	return NULL;
}

// ekrsa_decrypt returns the plaintext length or -1.
static long ekrsa_decrypt(EVP_PKEY_CTX *ctx, const unsigned char *in, size_t inlen, unsigned char *out, size_t outcap) {
	size_t outlen = outcap;
	if (EVP_PKEY_decrypt(ctx, out, &outlen, in, inlen) <= 0) {
		ERR_clear_error();
		return -1;
	}
	return (long)outlen;
}
*/
import "C"

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Key is an RSA private key loaded into libcrypto with a decryption
// context prepared for one label.
type Key struct {
	ctx  *C.EVP_PKEY_CTX
	size int
	mu   sync.Mutex
}

// Load loads k for RSA-OAEP decryption with SHA-256 under label, and
// decrypts once: libcrypto does its per-key setup (Montgomery contexts,
// blinding) on first use, so Load rather than the first DecryptOAEP pays
// for it.
func Load(k *rsa.PrivateKey, label []byte) (*Key, error) {
	der := x509.MarshalPKCS1PrivateKey(k)
	p := C.ekrsa_load((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	if p == nil {
		return nil, errors.New("ekrsa: libcrypto refused the key")
	}
	defer C.EVP_PKEY_free(p) // the context holds its own reference
	var l *C.uchar
	if len(label) > 0 {
		l = (*C.uchar)(unsafe.Pointer(&label[0]))
	}
	ctx := C.ekrsa_ctx(p, l, C.size_t(len(label)))
	if ctx == nil {
		return nil, errors.New("ekrsa: libcrypto could not prepare RSA-OAEP")
	}
	key := &Key{ctx: ctx, size: k.Size()}
	runtime.AddCleanup(key, func(ctx *C.EVP_PKEY_CTX) { C.EVP_PKEY_CTX_free(ctx) }, ctx)
	probe := []byte("ekrsa warm-up")
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, probe, label)
	if err != nil {
		return nil, err
	}
	if got, err := key.DecryptOAEP(ct); err != nil || !bytes.Equal(got, probe) {
		return nil, fmt.Errorf("ekrsa: libcrypto's RSA-OAEP does not round-trip (%v)", err)
	}
	return key, nil
}

// DecryptOAEP decrypts ciphertext with RSA-OAEP, SHA-256 and the label
// the key was loaded for.
func (k *Key) DecryptOAEP(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 {
		return nil, rsa.ErrDecryption
	}
	out := make([]byte, k.size)
	k.mu.Lock()
	n := C.ekrsa_decrypt(k.ctx, (*C.uchar)(unsafe.Pointer(&ciphertext[0])), C.size_t(len(ciphertext)),
		(*C.uchar)(unsafe.Pointer(&out[0])), C.size_t(len(out)))
	k.mu.Unlock()
	if n < 0 {
		return nil, rsa.ErrDecryption
	}
	return out[:n], nil
}
