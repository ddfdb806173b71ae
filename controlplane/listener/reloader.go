package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// PollInterval is how often a Reloader looks for changed files.
const PollInterval = 2 * time.Second

// Reloader holds a TLS certificate and its key read from PEM files. Run
// reads them again on SIGHUP and when either file changes (its size,
// modification time or inode: a rename over it too); a new pair that is
// bad (unreadable, a key that does not match, expired) is logged and the
// current one kept. Open connections keep the certificate they were
// served; the next handshake gets the new one.
type Reloader struct {
	certPath, keyPath string
	log               *slog.Logger
	interval          time.Duration

	cert atomic.Pointer[tls.Certificate]
	// mu serializes loads; seen are the files as last loaded.
	mu   sync.Mutex
	seen [2]os.FileInfo
}

// NewReloader reads the pair, saying what is wrong with it if it cannot
// be served.
func NewReloader(certPath, keyPath string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certPath: certPath, keyPath: keyPath, log: log, interval: PollInterval}
	leaf, err := r.load(time.Now())
	if err != nil {
		return nil, err
	}
	log.Info("TLS certificate", append(describeLeaf(leaf), "cert", certPath, "key", keyPath)...)
	return r, nil
}

// GetCertificate returns the current certificate, for
// tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// leaf is the current certificate's first, the server's own.
func (r *Reloader) leaf() *x509.Certificate { return r.cert.Load().Leaf }

// Reload reads the pair again and serves it from the next handshake on;
// on an error the current pair stays.
func (r *Reloader) Reload() error {
	_, err := r.load(time.Now())
	return err
}

// Run reloads on SIGHUP and when the files change, until ctx is done.
func (r *Reloader) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.reload("SIGHUP")
		case <-tick.C:
			if r.changed() {
				r.reload("file changed")
			}
		}
	}
}

// reload loads the pair and logs the outcome.
func (r *Reloader) reload(why string) {
	leaf, err := r.load(time.Now())
	if err != nil {
		cur := r.leaf()
		r.log.Error("TLS certificate not reloaded: still serving the current one", "reason", why, "err", err,
			"current_subject", cur.Subject.String(), "current_expires", cur.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	r.log.Info("TLS certificate reloaded", append(describeLeaf(leaf), "reason", why)...)
}

// load reads and checks the pair, and serves it when it is good.
func (r *Reloader) load(now time.Time) (*x509.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stat before reading: a change made while reading is seen by the
	// next poll.
	r.seen = [2]os.FileInfo{stat(r.certPath), stat(r.keyPath)}
	cert, err := ReadPair(r.certPath, r.keyPath, now)
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	return cert.Leaf, nil
}

// ReadPair reads a PEM certificate (chain) and its key and checks that
// they can be served at now: the key is the certificate's and the
// certificate is valid.
func ReadPair(certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", certPath, keyPath, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", certPath, err)
		}
		cert.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("TLS certificate %s expired at %s", certPath, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("TLS certificate %s is not valid before %s (is the clock right?)", certPath, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// changed reports whether either file differs from when it was loaded.
func (r *Reloader) changed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !sameFile(r.seen[0], stat(r.certPath)) || !sameFile(r.seen[1], stat(r.keyPath))
}

// stat is the file's info, nil when it cannot be had.
func stat(path string) os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return fi
}

func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// describeLeaf is what logs say of a certificate.
func describeLeaf(leaf *x509.Certificate) []any {
	return []any{
		"subject", leaf.Subject.String(),
		"sans", strings.Join(names(leaf), ","),
		"issuer", leaf.Issuer.String(),
		"expires", leaf.NotAfter.UTC().Format(time.RFC3339),
	}
}

// names are a certificate's DNS names and IP addresses.
func names(leaf *x509.Certificate) []string {
	out := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
