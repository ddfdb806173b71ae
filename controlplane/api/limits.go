package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/attestation/attestation/controlplane/logging"
)

// DefaultMaxRequestBytes caps a request body, and what it decompresses
// to, when the daemon is not told otherwise: far above any message of the
// API (an agent's Attest with a UEFI event log is some tens of KB), far
// below what hurts.
const DefaultMaxRequestBytes = 1 << 20

// bodyReadTimeout bounds the time a client takes to send a request body,
// so that a trickling client holds no handler for long. Only the body:
// a stream's response can last as long as it needs.
const bodyReadTimeout = 30 * time.Second

// freeBodyBytes of each body are read without asking the budget: every
// request of the API but an Attest with a long event log fits in them.
const freeBodyBytes = 16 << 10

// budgetBodies is how many bodies of the largest size the budget holds.
const budgetBodies = 8

// Limits caps request bodies. One Limits is shared by the API's handlers
// and the middleware in front of every route, so that every refusal is
// counted and logged the same way.
type Limits struct {
	// Max is the most bytes a request body may hold, and the most a
	// compressed one may decompress to.
	Max int64
	// budget bounds the bodies of unknown length past 16 KiB being read
	// at once, across all requests, to 8: a hundred clients streaming
	// large bodies at once wait their turn rather than each hold Max bytes.
	budget *semaphore.Weighted
	// buffers hold Max+1 bytes each, for the bodies readAll reads.
	buffers sync.Pool
	log     *slog.Logger
	// logged spaces the refusal log lines out to one a second.
	logged  logging.Every
	refused *prometheus.CounterVec
}

// NewLimits returns Limits of max bytes (DefaultMaxRequestBytes when max
// is not positive), registering attestation_http_request_body_refused_total.
func NewLimits(max int64, reg prometheus.Registerer, log *slog.Logger) *Limits {
	if max <= 0 {
		max = DefaultMaxRequestBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Limits{Max: max, budget: semaphore.NewWeighted(budgetBodies * (max + 1)), log: log, logged: logging.Every{Interval: time.Second}, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestation_http_request_body_refused_total",
		Help: "Requests refused for a body over max_request_bytes, by route kind and why (content_length, body, decompressed).",
	}, []string{"route", "reason"})}
	l.buffers.New = func() any {
		b := make([]byte, max+1)
		return &b
	}
	if reg != nil {
		reg.MustRegister(l.refused)
	}
	return l
}

func (l *Limits) refuse(r *http.Request, route, reason string, size int64) {
	l.refused.WithLabelValues(route, reason).Inc()
	args := []any{"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", reason, "max_bytes", l.Max}
	if size > 0 {
		args = append(args, "content_length", size)
	}
	l.warn(args...)
}

// warn logs a refusal, at most one a second: a flood of oversized
// requests must not become a flood of log lines. The next line says how
// many were left out; the metric counts them all.
func (l *Limits) warn(args ...any) {
	if n, ok := l.logged.Allow(time.Now()); ok {
		if n > 0 {
			args = append(args, "not_logged_since_last", n)
		}
		l.log.Warn("request body too large", args...)
	}
}

// routeKind sorts a path into the kinds of routes that answer a body over
// the limit differently: Connect, gRPC and gRPC-Web procedures with their
// protocol's resource_exhausted, REST (/api/v1/..., extensions' routes
// included) with a JSON 413, everything else with a plain 413.
func routeKind(r *http.Request) string {
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		return "rest"
	case strings.Count(r.URL.Path, "/") == 2 && strings.Contains(r.URL.Path[1:strings.LastIndexByte(r.URL.Path, '/')], "."):
		return "rpc" // /package.Service/Method
	default:
		return "http"
	}
}

// Middleware caps the body of every request that reaches h: one whose
// Content-Length says it is over the limit is refused before a byte of it
// is read. A body of unknown length (chunked) that is not a stream of
// messages is read here, before h runs: the first 16 KiB freely, the rest into a buffer of the limit's
// size taken from a pool under the budget, so that a hundred clients
// streaming large bodies at once hold at most eight such buffers and
// leave no garbage behind; one over the limit is refused whether or not
// its handler would have read it. A refused RPC gets resource_exhausted
// from its protocol (Connect maps the http.MaxBytesError it reads), a
// REST route a JSON 413, any other route a plain 413. Sending a body may
// take at most 30 s.
func (l *Limits) Middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		route := routeKind(r)
		if r.ContentLength > l.Max {
			l.refuse(r, route, "content_length", r.ContentLength)
			l.tooLarge(w, r, h, route)
			return
		}
		rc := http.NewResponseController(w)
		// Not every ResponseWriter can (httptest's cannot): then the
		// server's own timeouts are all there is.
		deadline := rc.SetReadDeadline(time.Now().Add(bodyReadTimeout)) == nil
		b := &limitedBody{r: http.MaxBytesReader(w, r.Body, l.Max), rc: rc, deadline: deadline}
		r.Body = b
		if r.ContentLength < 0 && !enveloped(r) {
			buf, release, err := l.readAll(r.Context(), b)
			defer release()
			switch {
			case b.over():
				l.refuse(r, route, "body", 0)
				l.tooLarge(w, r, h, route)
				return
			case errors.Is(err, errBodyBudget):
				w.Header().Set("Retry-After", "5")
				if route == "rpc" {
					r.Body = errorBody{err: connect.NewError(connect.CodeResourceExhausted, err)}
					h.ServeHTTP(w, r)
					return
				}
				writeRouteError(w, route, http.StatusServiceUnavailable, connect.CodeUnavailable, err.Error())
				return
			case err != nil:
				writeRouteError(w, route, http.StatusBadRequest, connect.CodeInvalidArgument, "reading the request body: "+err.Error())
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(buf)), int64(len(buf))
		}
		h.ServeHTTP(w, r)
		if b.over() {
			l.refuse(r, route, "body", 0)
		}
	})
}

// enveloped reports whether the body is a stream of length-prefixed
// messages (gRPC, gRPC-Web, Connect streaming): Connect refuses a message
// over the limit from its prefix, before reading it, and a stream's body
// may stay open while it runs, so it is not read ahead.
func enveloped(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// tooLarge answers a request whose body is over the limit: an RPC through
// its handler, which reads a body that fails at once and answers as its
// protocol says; any other route with 413.
func (l *Limits) tooLarge(w http.ResponseWriter, r *http.Request, h http.Handler, route string) {
	if route != "rpc" {
		l.write413(w, route)
		return
	}
	r.Body = errorBody{err: &http.MaxBytesError{Limit: l.Max}}
	h.ServeHTTP(w, r)
}

// readAll reads a body of unknown length, up to the limit and one byte
// past it. Past the first 16 KiB it waits for the budget (at most 30 s)
// and reads into a pooled buffer; release gives both back once the
// request is done with the bytes.
func (l *Limits) readAll(ctx context.Context, b io.Reader) (buf []byte, release func(), err error) {
	first := make([]byte, freeBodyBytes)
	n, err := io.ReadFull(b, first)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return first[:n], func() {}, nil
	}
	if err != nil {
		return nil, func() {}, err
	}
	need := l.Max + 1
	wctx, cancel := context.WithTimeout(ctx, bodyReadTimeout)
	err = l.budget.Acquire(wctx, need)
	cancel()
	if err != nil {
		return nil, func() {}, fmt.Errorf("%w: the daemon is reading too many large request bodies at once; retry", errBodyBudget)
	}
	pooled := l.buffers.Get().(*[]byte)
	release = func() {
		l.buffers.Put(pooled)
		l.budget.Release(need)
	}
	buf = (*pooled)[:l.Max+1]
	copy(buf, first)
	m, err := io.ReadFull(b, buf[n:])
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return buf[:n+m], release, err
}

// TooLarge is how every refusal of a body over the limit starts.
const TooLarge = "request body too large"

// write413 answers a body over the limit on a non-RPC route.
func (l *Limits) write413(w http.ResponseWriter, route string) {
	msg := fmt.Sprintf("%s: the limit is %d bytes", TooLarge, l.Max)
	// The rest of the body is not read: close rather than drain it.
	w.Header().Set("Connection", "close")
	writeRouteError(w, route, http.StatusRequestEntityTooLarge, connect.CodeResourceExhausted, msg)
}

// writeRouteError answers an error in the REST API's JSON on a REST
// route, in plain text on the others (a booting machine's iPXE and the
// agent's config fetch read text).
func writeRouteError(w http.ResponseWriter, route string, status int, code connect.Code, msg string) {
	if route == "rest" {
		writeRESTError(w, status, code, msg)
		return
	}
	http.Error(w, msg, status)
}

// errorBody stands in for a body that is not to be read: reading it fails
// at once with err.
type errorBody struct{ err error }

func (b errorBody) Read([]byte) (int, error) { return 0, b.err }
func (b errorBody) Close() error             { return nil }

// limitedBody is a request body under http.MaxBytesReader that clears the
// read deadline once the body has been read to its end, so that a stream
// whose request is in can run past it.
type limitedBody struct {
	r        io.ReadCloser
	rc       *http.ResponseController
	deadline bool
	// tripped: the body went over the limit.
	tripped atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			b.tripped.Store(true)
		}
		if b.deadline {
			b.rc.SetReadDeadline(time.Time{})
			b.deadline = false
		}
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.r.Close() }

func (b *limitedBody) over() bool { return b.tripped.Load() }

// errBodyBudget: a body waited too long for the budget.
var errBodyBudget = errors.New("request body not read")

// HandlerOptions are the Connect handler options that apply the limit to
// each message and to what a compressed one decompresses to. Connect's
// own check finds a decompression bomb out only after inflating all of it
// to count the bytes; this gzip stops at the limit.
func (l *Limits) HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(int(l.Max)),
		connect.WithCompression("gzip", l.newDecompressor("rpc"), newGzipWriter),
	}
}

// TranscoderOptions apply the limit to the REST transcoder: what it
// buffers of a message, and what a compressed body decompresses to.
func (l *Limits) TranscoderOptions() []vanguard.TranscoderOption {
	return []vanguard.TranscoderOption{
		vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(uint32(min(l.Max, 1<<31)))),
		// Before WithCodec: vanguard v0.4.0 makes its compressor map only
		// while it has no codecs (it tests the wrong map).
		vanguard.WithCompression("gzip", newGzipWriter, l.newDecompressor("rest")),
	}
}

func newGzipWriter() connect.Compressor { return gzip.NewWriter(io.Discard) }

func (l *Limits) newDecompressor(route string) func() connect.Decompressor {
	return func() connect.Decompressor { return &boundedGzip{l: l, route: route} }
}

// errDecompressedTooLarge is what boundedGzip fails with past the limit.
func (l *Limits) errDecompressedTooLarge() error {
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s: it decompresses to more than %d bytes", TooLarge, l.Max))
}

// boundedGzip is a gzip reader that fails once it has produced more than
// the limit, without inflating the rest.
type boundedGzip struct {
	l     *Limits
	route string
	zr    *gzip.Reader
	n     int64
	over  bool
}

func (g *boundedGzip) Reset(r io.Reader) error {
	g.n, g.over = 0, false
	if g.zr == nil {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		g.zr = zr
		return nil
	}
	return g.zr.Reset(r)
}

func (g *boundedGzip) Read(p []byte) (int, error) {
	if g.over {
		return 0, g.l.errDecompressedTooLarge()
	}
	// Read at most one byte past the limit: enough to know.
	if room := g.l.Max + 1 - g.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := g.zr.Read(p)
	g.n += int64(n)
	if g.n > g.l.Max {
		g.over = true
		g.l.refused.WithLabelValues(g.route, "decompressed").Inc()
		g.l.warn("route", g.route, "reason", "decompressed", "max_bytes", g.l.Max)
		return n, g.l.errDecompressedTooLarge()
	}
	return n, err
}

func (g *boundedGzip) Close() error {
	if g.zr == nil {
		return nil
	}
	return g.zr.Close()
}
