package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// metrics counts and times every procedure, whichever protocol (Connect,
// gRPC, gRPC-Web, REST) carried it.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, st *store.Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestation_api_requests_total",
			Help: "API requests by procedure and result code.",
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestation_api_request_duration_seconds",
			Help:    "API request latency by procedure.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"procedure"}),
	}
	reg.MustRegister(m.requests, m.latency, &stateCollector{store: st})
	return m
}

func (m *metrics) observe(procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.latency.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}

func (m *metrics) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		resp, err := next(ctx, req)
		m.observe(req.Spec().Procedure, start, err)
		return resp, err
	}
}

func (m *metrics) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (m *metrics) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		if errors.Is(err, context.Canceled) {
			err = nil // the client hung up: a normal end of a stream
		}
		m.observe(conn.Spec().Procedure, start, err)
		return err
	}
}

// stateCollector reads gauges from the database at scrape time, so they
// are right whichever process or replica made the change.
type stateCollector struct{ store *store.Store }

var (
	machinesDesc = prometheus.NewDesc("attestation_machines",
		"Machines by lifecycle state.", []string{"state"}, nil)
	pendingDesc = prometheus.NewDesc("attestation_events_pending",
		"Committed events not yet delivered, by subscriber.", []string{"subscriber"}, nil)
	eventsDesc = prometheus.NewDesc("attestation_events_committed",
		"Sequence number of the newest committed event.", nil, nil)
	synchronousDesc = prometheus.NewDesc("attestation_database_synchronous",
		"SQLite's synchronous setting on the write connection, as SQLite reports it: 2 (FULL) or 3 (EXTRA) fsync the WAL at every commit, before the change is acknowledged; 1 (NORMAL) and 0 (OFF) do not.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- pendingDesc
	ch <- eventsDesc
	ch <- synchronousDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if counts, err := c.store.CountMachinesByState(ctx); err == nil {
		for _, st := range lifecycle.States() {
			ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
	if n, err := c.store.Synchronous(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(synchronousDesc, prometheus.GaugeValue, float64(n))
	}
	last, err := c.store.LastEventSeq(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(eventsDesc, prometheus.GaugeValue, float64(last))
	if cursors, err := c.store.Cursors(ctx); err == nil {
		for name, seq := range cursors {
			ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(max(last-seq, 0)), name)
		}
	}
}
