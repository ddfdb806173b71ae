package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// workers is how many clients call the API at once.
const workers = 8

// BenchmarkLifecycle measures pre-register + revoke (two durable commits,
// two events) per second through the Connect API, with 8 concurrent
// clients; one op is one machine's lifecycle. With subscribers, every event
// is also delivered to that many no-op handlers, whose cursor writes share
// the database with the API.
func BenchmarkLifecycle(b *testing.B) {
	for _, subs := range []int{0, 2} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			var ss []events.Subscription
			for i := range subs {
				ss = append(ss, events.Subscription{
					Name:   fmt.Sprintf("bench_noop_%d", i),
					Handle: func(context.Context, events.Envelope) error { return nil },
				})
			}
			d := daemontest.Start(b, daemontest.Options{Subscriptions: ss})
			client := machineClient(d)
			ctx := context.Background()

			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			var g errgroup.Group
			for range workers {
				g.Go(func() error {
					for next.Add(1) <= int64(b.N) {
						if err := preRegisterAndRevoke(ctx, client); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			perSec := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(perSec, "lifecycles/s")
			b.ReportMetric(2*perSec, "commits/s")
			if b.N >= 100 {
				b.Logf("lifecycle (pre-register + revoke), %d workers, %d subscribers: %d in %s = %.0f lifecycles/s, %.0f durable commits/s",
					workers, subs, b.N, elapsed.Round(time.Millisecond), perSec, 2*perSec)
			}
		})
	}
}

// BenchmarkCommit is the floor under BenchmarkLifecycle: durable
// commits per second of one machine insert and its event straight through
// the store, from 8 goroutines, without the API.
func BenchmarkCommit(b *testing.B) {
	st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var g errgroup.Group
	for range workers {
		g.Go(func() error {
			for next.Add(1) <= int64(b.N) {
				_, err := st.Update(ctx, func(tx *store.Tx) error {
					m := &store.Machine{EKFingerprint: fingerprint(), State: lifecycle.Registered, PreRegistered: true}
					if err := tx.InsertMachine(ctx, m); err != nil {
						return err
					}
					return tx.Emit(ctx, m, &events.Registered{PreRegistered: true})
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	if b.N >= 100 {
		b.Logf("store commits (machine + event), %d goroutines: %d in %s = %.0f durable commits/s",
			workers, b.N, elapsed.Round(time.Millisecond), float64(b.N)/elapsed.Seconds())
	}
}

// preRegisterAndRevoke pre-registers a new machine and revokes it.
func preRegisterAndRevoke(ctx context.Context, c attestationv1connect.MachineServiceClient) error {
	reg, err := c.RegisterMachine(ctx, connect.NewRequest(&attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint()}))
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	_, err = c.RevokeMachine(ctx, connect.NewRequest(&attestationv1.RevokeMachineRequest{
		Id: reg.Msg.Machine.Id, Reason: "benchmark",
	}))
	if err != nil {
		return fmt.Errorf("revoke %s: %w", reg.Msg.Machine.Id, err)
	}
	return nil
}

// dispatchEvents is how many events one op of BenchmarkEventDispatch commits.
const dispatchEvents = 10_000

// BenchmarkEventDispatch commits 10,000 events per op (pre-registrations
// through the Connect API, 8 concurrent clients) and measures, for each,
// the time from its commit transaction (the envelope's Time) to the call of
// a subscriber's handler; it reports the median and the 99th percentile.
func BenchmarkEventDispatch(b *testing.B) {
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, dispatchEvents)
		delivered = make(chan struct{}, 1)
		want      int
	)
	sub := events.Subscription{Name: "bench_latency", Handle: func(_ context.Context, ev events.Envelope) error {
		l := time.Since(ev.Time)
		mu.Lock()
		defer mu.Unlock()
		latencies = append(latencies, l)
		if len(latencies) == want {
			delivered <- struct{}{}
		}
		return nil
	}}
	d := daemontest.Start(b, daemontest.Options{Subscriptions: []events.Subscription{sub}})
	client := machineClient(d)
	ctx := context.Background()
	var (
		apiMu sync.Mutex
		api   = make([]time.Duration, 0, dispatchEvents)
	)

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		mu.Lock()
		want += dispatchEvents
		mu.Unlock()
		var next atomic.Int64
		var g errgroup.Group
		for range workers {
			g.Go(func() error {
				for next.Add(1) <= dispatchEvents {
					t0 := time.Now()
					_, err := client.RegisterMachine(ctx, connect.NewRequest(&attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint()}))
					if err != nil {
						return fmt.Errorf("register: %w", err)
					}
					l := time.Since(t0)
					apiMu.Lock()
					api = append(api, l)
					apiMu.Unlock()
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-delivered:
		case <-time.After(5 * time.Minute):
			b.Fatalf("events not all delivered within 5 minutes")
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	slices.Sort(api)
	p50, p99 := percentile(latencies, 0.50), percentile(latencies, 0.99)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "events/s")
	b.Logf("event dispatch, %d events committed by %d API clients at %.0f events/s: commit to handler p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
		len(latencies), workers, float64(len(latencies))/elapsed.Seconds(),
		ms(p50), ms(percentile(latencies, 0.90)), ms(p99), ms(latencies[len(latencies)-1]))
	// The event's time is taken inside the commit transaction, so a slow
	// commit (an fsync stall) shows in both lines; the dispatcher's own
	// share is the difference.
	b.Logf("for comparison, the API request that committed each event: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
		ms(percentile(api, 0.50)), ms(percentile(api, 0.90)), ms(percentile(api, 0.99)), ms(api[len(api)-1]))
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// machineClient is a Connect client of d that authenticates as admin and
// keeps a connection per worker.
func machineClient(d *daemontest.Daemon) attestationv1connect.MachineServiceClient {
	hc := &http.Client{Transport: authTransport{
		token: d.Token,
		next:  &http.Transport{MaxIdleConnsPerHost: 2 * workers},
	}}
	return attestationv1connect.NewMachineServiceClient(hc, d.URL)
}

type authTransport struct {
	token string
	next  http.RoundTripper
}

func (t authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.next.RoundTrip(r)
}

// fingerprint returns a random EK fingerprint: 64 hex digits.
func fingerprint() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
