// Package tftp serves the iPXE binaries and the files under the boot
// assets directory over TFTP (github.com/pin/tftp), read only: write
// requests are refused, names are resolved through os.Root so no request
// leaves the directory, blksize and windowsize (RFC 7440) are negotiated
// and tsize answered, and the number of transfers in flight is bounded.
package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/controlplane/logging"
)

// Defaults of Options.
const (
	DefaultAddr    = ":69"
	DefaultIPXEDir = "/usr/lib/ipxe"
	// DefaultMaxTransfers lets a boot storm of a few thousand machines be
	// served at once: a lockstep transfer holds about 40 KB (its read
	// buffer, its block, a goroutine) and two file descriptors, a windowed
	// one its window besides (94 KB at 64 blocks of 1468 bytes).
	DefaultMaxTransfers = 4096
	// DefaultBlockSize is the largest blksize granted: an Ethernet frame
	// (1500) less the IPv4, UDP and TFTP headers, so blocks never fragment.
	DefaultBlockSize = 1468
	// DefaultWindowSize is the largest windowsize granted: 64 blocks of
	// 1468 bytes, 94 KB, fit the default socket send buffer.
	DefaultWindowSize = 64
	DefaultTimeout    = 3 * time.Second
	DefaultRetries    = 5
)

// IPXEBinaries are the names served from the iPXE directory (Debian's
// ipxe package), when the assets directory has no file of that name.
var IPXEBinaries = []string{"undionly.kpxe", "snponly.efi", "ipxe.efi"}

// Options configure a Server; zero values take the defaults.
type Options struct {
	// Addr is the UDP address to listen on.
	Addr string
	// Root is the boot assets directory; empty serves the iPXE binaries only.
	Root string
	// IPXEDir holds the iPXE binaries.
	IPXEDir string
	// MaxTransfers bounds the transfers in flight; requests beyond it are
	// refused with a TFTP error.
	MaxTransfers int
	// BlockSize is the largest blksize granted; a client asking for less
	// gets what it asked for.
	BlockSize int
	// WindowSize is the largest windowsize granted (RFC 7440): a client
	// asking for a window gets up to that many blocks per ACK. 1 grants
	// none: every transfer is lockstep.
	WindowSize int
	// Timeout is how long to wait for each ACK; Retries how many times a
	// block is sent before the transfer is abandoned.
	Timeout time.Duration
	Retries int
	Logger  *slog.Logger
	// Registerer, when set, gets the server's metrics.
	Registerer prometheus.Registerer
	// Listening is called with the bound address once requests are read.
	Listening func(addr net.Addr)
}

// What the client is told when its request is refused. pin/tftp sends
// every handler error with code 1, the message says which it is.
var (
	errNotFound = errors.New("file not found")
	errDenied   = errors.New("access violation")
	errBusy     = errors.New("server busy, try again later")
	errReadOnly = errors.New("read-only server: write requests are refused")
)

// Results of a transfer, the label of the transfers metric.
const (
	resultOK       = "ok"
	resultFailed   = "failed"
	resultNotFound = "not_found"
	resultDenied   = "denied"
	resultBusy     = "busy"
	resultWrite    = "write_refused"
	// resultBadOption: an option value its RFC does not allow, refused
	// with ERROR code 8.
	resultBadOption = "bad_option"
	// resultSizeQuery: the client ended the transfer after the option
	// acknowledgment, before any data (RFC 2347 error 8), as UEFI PXE
	// firmware does to learn a file's size before fetching it.
	resultSizeQuery = "size_query"
)

// requestBuffer is the socket receive buffer for requests.
const requestBuffer = 4 << 20

// readBuffer is how much of a file a transfer reads at a time: 11 blocks
// of 1468 bytes a read(2), 64 MB for DefaultMaxTransfers.
const readBuffer = 16 << 10

// busyLogEvery spaces the "limit reached" log lines during a boot storm.
const busyLogEvery = 10 * time.Second

// Server is a read-only TFTP server.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	slots   chan struct{}

	// transfers in flight by client address, so the hook (called inside
	// ReadFrom, on the handler's goroutine) can say which blksize was
	// negotiated.
	transfers sync.Map

	// busyLogged spaces the "limit reached" lines out to one every
	// busyLogEvery.
	busyLogged logging.Every
	// segmentsRefused logs the first refusal of a segmented send only:
	// where the kernel refuses one, it refuses every transfer's alike.
	segmentsRefused sync.Once
}

// New checks the options and registers the metrics.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.IPXEDir == "" {
		opts.IPXEDir = DefaultIPXEDir
	}
	if opts.MaxTransfers <= 0 {
		opts.MaxTransfers = DefaultMaxTransfers
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.BlockSize < 512 || opts.BlockSize > 65464 {
		return nil, fmt.Errorf("tftp block size %d: want 512..65464", opts.BlockSize)
	}
	if opts.WindowSize == 0 {
		opts.WindowSize = DefaultWindowSize
	}
	if opts.WindowSize < 1 || opts.WindowSize > 65535 {
		return nil, fmt.Errorf("tftp window size %d: want 1..65535", opts.WindowSize)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Retries <= 0 {
		opts.Retries = DefaultRetries
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := newMetrics()
	if opts.Registerer != nil {
		if err := m.register(opts.Registerer); err != nil {
			return nil, fmt.Errorf("register tftp metrics: %w", err)
		}
	}
	return &Server{opts: opts, log: log, metrics: m, slots: make(chan struct{}, opts.MaxTransfers),
		busyLogged: logging.Every{Interval: busyLogEvery}}, nil
}

// Run serves until ctx is done, then lets the transfers in flight end
// (each is bounded by Timeout and Retries) and returns nil.
func (s *Server) Run(ctx context.Context) error {
	var root *os.Root
	if s.opts.Root != "" {
		r, err := os.OpenRoot(s.opts.Root)
		if err != nil {
			return fmt.Errorf("tftp: boot assets: %w", err)
		}
		defer r.Close()
		root = r
	}
	conn, err := net.ListenPacket("udp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("tftp: listen on %s: %w", s.opts.Addr, err)
	}
	if uc, ok := conn.(*net.UDPConn); ok {
		// A boot storm's requests arrive together; the default buffer
		// drops most of them and each drop costs the client a timeout.
		// The kernel caps it at net.core.rmem_max.
		uc.SetReadBuffer(requestBuffer)
	}
	srv := tftp.NewServer(
		func(name string, rf io.ReaderFrom) error { return s.read(root, name, rf) },
		s.write,
	)
	srv.SetBlockSize(s.opts.BlockSize)
	srv.SetWindowSize(s.opts.WindowSize)
	srv.SetTransferConn(func(laddr *net.UDPAddr) (net.PacketConn, error) {
		return listenTransfer(laddr, s.segmentRefused)
	})
	srv.SetTimeout(s.opts.Timeout)
	srv.SetRetries(s.opts.Retries)
	srv.SetHook(hook{s})

	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()
	s.log.Info("tftp listening", "addr", conn.LocalAddr().String(), "boot_assets", s.opts.Root,
		"ipxe_dir", s.opts.IPXEDir, "max_transfers", s.opts.MaxTransfers, "max_blksize", s.opts.BlockSize,
		"max_windowsize", s.opts.WindowSize)
	if s.opts.Listening != nil {
		s.opts.Listening(conn.LocalAddr())
	}
	select {
	case err := <-served:
		// Serve only returns early when it cannot use the socket.
		conn.Close()
		return fmt.Errorf("tftp: serve: %w", err)
	case <-ctx.Done():
	}
	srv.Shutdown()
	<-served
	return nil
}

// segmentRefused logs, the first time only, that the kernel refused to
// send a window in one segmented send: that transfer, and others on such
// a route, send their windows one datagram at a time.
func (s *Server) segmentRefused(to net.Addr, err error) {
	s.segmentsRefused.Do(func() {
		s.log.Warn("tftp UDP segmentation refused: windows go out one datagram at a time", "client", to.String(), "err", err)
	})
}

// transfer is one read request being served, with the options
// negotiated for it.
type transfer struct {
	blksize    int
	windowsize int
	// tsize is the size sent in the option acknowledgment, "" when the
	// client did not ask for it.
	tsize string
}

// logAttrs are the negotiated options, for the transfer's log line.
func (t *transfer) logAttrs() []any {
	attrs := []any{"blksize", t.blksize, "windowsize", t.windowsize}
	if t.tsize != "" {
		attrs = append(attrs, "tsize", t.tsize)
	}
	return attrs
}

// read serves a read request.
func (s *Server) read(root *os.Root, name string, rf io.ReaderFrom) error {
	start := time.Now()
	ot := rf.(tftp.OutgoingTransfer)
	client := ot.RemoteAddr()
	log := s.log.With("client", client.String(), "file", name)

	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.refuseBusy(client.String(), name)
		return errBusy
	}

	f, size, err := s.open(root, name)
	if err != nil {
		result := resultNotFound
		if errors.Is(err, errDenied) {
			result = resultDenied
		}
		s.metrics.transfers.WithLabelValues(result).Inc()
		log.Warn("tftp request refused", "result", result, "reason", err)
		if result == resultDenied {
			return errDenied
		}
		return errNotFound
	}
	defer f.Close()
	ot.SetSize(size)

	key := transferKey(client.IP, client.Port)
	t := &transfer{blksize: 512, windowsize: 1}
	s.transfers.Store(key, t)
	defer s.transfers.Delete(key)
	// Buffered: the sender asks for one block at a time, a read(2) each
	// otherwise.
	n, err := rf.ReadFrom(bufio.NewReaderSize(f, readBuffer))
	d := time.Since(start)
	s.metrics.bytes.Add(float64(n))
	s.metrics.duration.Observe(d.Seconds())
	var optErr *tftp.OptionError
	switch {
	case n == 0 && sizeQuery(err):
		s.metrics.transfers.WithLabelValues(resultSizeQuery).Inc()
		log.Info("tftp size query", append([]any{"size", size, "duration", d}, t.logAttrs()...)...)
	case errors.As(err, &optErr):
		// Refused before the option acknowledgment, with ERROR code 8.
		s.metrics.transfers.WithLabelValues(resultBadOption).Inc()
		log.Warn("tftp request refused", "result", resultBadOption, "reason", err)
	case err != nil:
		// The transfer already told the client; returning the error would
		// send a second ERROR packet.
		s.metrics.transfers.WithLabelValues(resultFailed).Inc()
		log.Warn("tftp transfer failed", append([]any{"bytes", n, "size", size, "duration", d, "err", err}, t.logAttrs()...)...)
	default:
		s.metrics.transfers.WithLabelValues(resultOK).Inc()
		log.Info("tftp transfer", append([]any{"bytes", n, "duration", d}, t.logAttrs()...)...)
	}
	return nil
}

// sizeQuery reports whether err is the client's ERROR packet with code 8
// (RFC 2347: terminate after the option acknowledgment) in answer to the
// OACK: pin/tftp says so only in the error's text.
func sizeQuery(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "sending block 0: code=8,")
}

// open finds a requested file: under the assets directory, through
// os.Root, or else, for the iPXE binaries' names only, in the iPXE
// directory. Only regular files are served. Errors wrap errDenied or
// errNotFound and say why, for the log.
func (s *Server) open(root *os.Root, name string) (*os.File, int64, error) {
	rel, err := cleanName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errDenied, err)
	}
	if root != nil {
		f, err := root.Open(filepath.FromSlash(rel))
		switch {
		case err == nil:
			return regular(f)
		case !errors.Is(err, fs.ErrNotExist):
			// Escaping symlinks, permissions: refused, not "not found".
			return nil, 0, fmt.Errorf("%w: %w", errDenied, err)
		}
	}
	if slices.Contains(IPXEBinaries, rel) {
		// rel is one of the fixed names: no client input reaches the path,
		// and Debian's ipxe.efi is a symlink out of the directory.
		f, err := os.Open(filepath.Join(s.opts.IPXEDir, rel))
		if err == nil {
			return regular(f)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("%w: %w", errDenied, err)
		}
	}
	return nil, 0, fmt.Errorf("%w: no such file", errNotFound)
}

// regular returns f and its size when it is a regular file, else closes it.
func regular(f *os.File) (*os.File, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %w", errNotFound, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: not a regular file", errNotFound)
	}
	return f, fi.Size(), nil
}

// write refuses every write request.
func (s *Server) write(name string, wt io.WriterTo) error {
	client := wt.(tftp.IncomingTransfer).RemoteAddr()
	s.metrics.transfers.WithLabelValues(resultWrite).Inc()
	s.log.Warn("tftp write request refused", "client", client.String(), "file", name)
	return errReadOnly
}

// refuseBusy counts a request refused at the limit and logs it, at most
// once every busyLogEvery, with how many were refused since the last line.
func (s *Server) refuseBusy(client, name string) {
	s.metrics.transfers.WithLabelValues(resultBusy).Inc()
	skipped, ok := s.busyLogged.Allow(time.Now())
	if !ok {
		return
	}
	s.log.Warn("tftp transfer limit reached: refusing requests", "max_transfers", s.opts.MaxTransfers,
		"refused", skipped+1, "client", client, "file", name)
}

func transferKey(ip net.IP, port int) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// hook learns the negotiated options of a transfer as it ends.
type hook struct{ s *Server }

func (h hook) OnSuccess(st tftp.TransferStats) { h.record(st) }

func (h hook) OnFailure(st tftp.TransferStats, _ error) { h.record(st) }

func (h hook) record(st tftp.TransferStats) {
	if st.RemoteAddr == nil {
		return
	}
	v, ok := h.s.transfers.Load(transferKey(st.RemoteAddr, st.Tid))
	if !ok {
		return
	}
	t := v.(*transfer)
	if n, err := strconv.Atoi(st.Opts["blksize"]); err == nil {
		t.blksize = n
	}
	if n, err := strconv.Atoi(st.Opts["windowsize"]); err == nil {
		t.windowsize = n
	}
	t.tsize = st.Opts["tsize"]
}

type metrics struct {
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
	duration  prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestation_tftp_transfers_total",
			Help: "TFTP requests by result: ok, failed, size_query, not_found, denied, busy, write_refused, bad_option.",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attestation_tftp_sent_bytes_total",
			Help: "Bytes of file data sent over TFTP.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "attestation_tftp_transfer_duration_seconds",
			Help:    "Duration of TFTP read transfers, from request to last ACK.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	for _, r := range []string{resultOK, resultFailed, resultSizeQuery, resultNotFound, resultDenied, resultBusy, resultWrite, resultBadOption} {
		m.transfers.WithLabelValues(r)
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.transfers, m.bytes, m.duration} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
