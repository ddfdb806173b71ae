//go:build cgo

package agent_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-tpm/tpm2"

	"github.com/attestation/attestation/agent"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// floodRegister is a Register with a fresh ECC EK each call, as an
// attacker with no TPM sends them, and a well-formed AK.
type floodRegister struct{ ak []byte }

func newFloodRegister(t *testing.T) floodRegister {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ak := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
		}),
	}
	return floodRegister{ak: tpm2.Marshal(ak)}
}

func (f floodRegister) request(t *testing.T) *attestationv1.RegisterRequest {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Error(err)
	}
	point := k.PublicKey().Bytes()
	ek := tpm2.ECCEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: point[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: point[33:]},
	})
	return &attestationv1.RegisterRequest{TpmAvailable: true, EkPublic: tpm2.Marshal(ek), AkPublic: f.ak}
}

// TestRegisterFlood floods the daemon with Registers of fresh random EKs
// from one address (127.0.0.2) while a real agent enrolls from another
// (127.0.0.1). The flood is held to its source's Register rate (the
// rest refused with resource_exhausted, counted on /metrics), and the real
// machine enrolls as if it were not there.
func TestRegisterFlood(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, nil)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 16}}
	flood := attestationv1connect.NewAgentServiceClient(client, d.URL)
	fr := newFloodRegister(t)

	ctx, stopFlood := context.WithCancel(context.Background())
	var (
		wg                sync.WaitGroup
		accepted, refused atomic.Int64
		otherErrs         atomic.Int64
		firstOther        atomic.Value
		floodStart        = time.Now()
	)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := flood.Register(ctx, connect.NewRequest(fr.request(t)))
				switch {
				case err == nil:
					accepted.Add(1)
				case connect.CodeOf(err) == connect.CodeResourceExhausted:
					refused.Add(1)
				case ctx.Err() == nil:
					otherErrs.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	// Let the flood use up its burst first.
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	enrollOnce(t, context.Background(), d, agent.Config{}, "under-flood", time.Minute)
	took := time.Since(start)
	stopFlood()
	wg.Wait()
	floodFor := time.Since(floodStart)

	t.Logf("enrolled in %v during a flood of %d Registers (%d accepted, %d refused) over %v",
		took.Round(time.Millisecond), accepted.Load()+refused.Load()+otherErrs.Load(), accepted.Load(), refused.Load(), floodFor.Round(time.Millisecond))
	if n := otherErrs.Load(); n > 0 {
		t.Errorf("%d flood Registers failed otherwise than resource_exhausted, first: %v", n, firstOther.Load())
	}
	// The default limits: 5 a second after a burst of 20.
	if max := 20 + int64(5*floodFor.Seconds()) + 1; accepted.Load() > max {
		t.Errorf("the flood had %d Registers accepted in %v, want at most %d", accepted.Load(), floodFor, max)
	}
	if refused.Load() == 0 {
		t.Error("no flood Register was refused")
	}
	// An enrollment takes about a second here; 20 s is a machine
	// crowded out, retrying.
	if took > 20*time.Second {
		t.Errorf("the real machine enrolled in %v under the flood, want the time it takes alone", took)
	}
	resp, err := http.Get(d.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `attestation_agent_register_refused_total{reason="rate"}`) ||
		strings.Contains(string(m), `attestation_agent_register_refused_total{reason="rate"} 0`) {
		t.Errorf("/metrics does not count the refused Registers:\n%s", grepLines(string(m), "register_refused"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
