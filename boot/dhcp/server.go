package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Server.
type Options struct {
	// Interface is the network interface to serve (SO_BINDTODEVICE);
	// replies carry its first IPv4 address as the server identifier.
	Interface string
	// Mode is ModeProxy (the default) or ModeFull.
	Mode Mode
	// PublicURL is the HTTP API's base URL, for the iPXE script and HTTP
	// boot URLs.
	PublicURL string
	// Arch maps option 93 to boot files; nil: DefaultArchTable.
	Arch ArchTable
	// Decider is the boot decision; nil answers every PXE client.
	Decider Decider
	// Pool is full mode's address pool (required in full mode; its Subnet
	// defaults to the interface's), Leases where its leases are kept (nil:
	// in memory only).
	Pool   *Pool
	Leases LeaseStore
	// Workers handle the packets that may wait on I/O, a boot decision
	// or a lease commit, concurrently (default 256: in full mode a
	// REQUEST's worker waits for its lease's commit, and every waiting
	// lease goes into the same commit); the socket readers answer the
	// others themselves. Queue bounds the packets waiting for a worker
	// (default 1024), oldest dropped first.
	Workers, Queue int
	// Ports are the UDP ports to listen on; nil: 67 and 4011.
	Ports  []int
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Answered, when set, is told of each client sent an offer or ack,
	// from the goroutine that sent it (attestationd's router
	// advertisements go to the iPXE clients among them: boot/ndp).
	Answered func(Client)
}

const (
	defaultWorkers = 256
	defaultQueue   = 1024
	// decisionTimeout bounds one packet's boot decision: a client
	// retransmits after a few seconds anyway.
	decisionTimeout = 2 * time.Second
)

// Server is the DHCP server on one interface.
type Server struct {
	opts    Options
	handler *Handler
	log     *slog.Logger
	m       metrics
}

type metrics struct {
	packets   *prometheus.CounterVec // by port and result
	replies   *prometheus.CounterVec // by kind and arch
	dropped   prometheus.Counter
	malformed prometheus.Counter
}

// New checks the options and returns a server ready to Run.
func New(opts Options) (*Server, error) {
	if opts.Interface == "" {
		return nil, errors.New("dhcp: no interface")
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeProxy
	case ModeProxy:
	case ModeFull:
		if opts.Pool == nil || opts.Pool.Start == nil || opts.Pool.End == nil {
			return nil, errors.New("dhcp: full mode needs an address pool (start and end)")
		}
	default:
		return nil, fmt.Errorf("dhcp: mode %q: want proxy or full", opts.Mode)
	}
	if opts.Arch == nil {
		opts.Arch = DefaultArchTable()
	}
	if err := opts.Arch.Validate(); err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers
	}
	if opts.Queue <= 0 {
		opts.Queue = defaultQueue
	}
	if opts.Ports == nil {
		opts.Ports = []int{ServerPort, BootServerPort}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		opts:    opts,
		handler: &Handler{Mode: opts.Mode, PublicURL: opts.PublicURL, Arch: opts.Arch, Decider: opts.Decider},
		log:     log,
		m: metrics{
			packets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attestation_dhcp_packets_total",
				Help: "DHCP packets received, by local port and result (offer, ack, or why none was sent)."}, []string{"port", "result"}),
			replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attestation_dhcp_replies_total",
				Help: "DHCP offers and acks sent, by kind and client architecture."}, []string{"kind", "arch"}),
			dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "attestation_dhcp_queue_dropped_total",
				Help: "DHCP packets dropped unhandled because the queue was full (oldest first)."}),
			malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "attestation_dhcp_malformed_total",
				Help: "DHCP packets that did not parse, dropped."}),
		},
	}
	if r := opts.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.m.packets, s.m.replies, s.m.dropped, s.m.malformed} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("dhcp: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// datagram is one received request waiting for a worker.
type datagram struct {
	conn *net.UDPConn
	req  Request
	msg  *dhcpv4.DHCPv4
}

// Run serves until ctx is done, then returns nil; it returns an error
// when it cannot listen.
func (s *Server) Run(ctx context.Context) error {
	ipnet, err := interfaceIPv4(s.opts.Interface)
	if err != nil {
		return err
	}
	ip := ipnet.IP
	if s.opts.Mode == ModeFull {
		p := *s.opts.Pool
		if p.Subnet == nil {
			p.Subnet = &net.IPNet{IP: ip.Mask(ipnet.Mask), Mask: ipnet.Mask}
		}
		l, err := newLeases(ctx, p, s.opts.Leases, nil)
		if err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		s.handler.leases = l
	}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, port := range s.opts.Ports {
		c, err := server4.NewIPv4UDPConn(s.opts.Interface, &net.UDPAddr{Port: port})
		if err != nil {
			return fmt.Errorf("dhcp: listen on %s port %d: %w", s.opts.Interface, port, err)
		}
		conns = append(conns, c)
		setSocketBuffers(c, s.log)
	}
	q := newQueue[datagram](s.opts.Queue, s.m.dropped.Inc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range s.opts.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case p := <-q.ch:
					s.serve(ctx, p)
				}
			}
		})
	}
	readErr := make(chan error, len(conns))
	for i, c := range conns {
		port := s.opts.Ports[i]
		wg.Go(func() { readErr <- s.read(ctx, c, port, ip, q) })
	}
	s.log.Info("dhcp serving", "interface", s.opts.Interface, "address", ip.String(), "mode", string(s.opts.Mode), "ports", s.opts.Ports)
	select {
	case <-ctx.Done():
		err = nil
	case err = <-readErr:
	}
	cancel()
	for _, c := range conns {
		c.Close() // ends the readers
	}
	wg.Wait()
	return err
}

// read receives datagrams until the socket closes. A request answered
// from memory is answered here, with no hand-off to a worker, and the
// replies to one batch read leave in one batch; a request that may wait
// on I/O goes into the queue.
func (s *Server) read(ctx context.Context, c *net.UDPConn, port int, ip net.IP, q *queue[datagram]) error {
	br := newBatchReader(c, readBatch)
	bw := newBatchWriter(c, writeBatch)
	var (
		in      []datagramIn
		replies []reply
		out     []datagramOut
		errs    []error
	)
	for {
		var err error
		in, err = br.read(in)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: read on port %d: %w", port, err)
		}
		replies, out = replies[:0], out[:0]
		for _, d := range in {
			req := Request{Src: d.src, Port: port, ServerIP: ip}
			m, err := parse(d.data)
			if err != nil {
				s.noReply(req, err)
				continue
			}
			if s.handler.waits(m) {
				q.push(datagram{conn: c, req: req, msg: m})
				continue
			}
			r, err := s.handler.handle(ctx, req, m)
			if err != nil {
				s.noReply(req, err)
				continue
			}
			replies = append(replies, reply{req, r})
			out = append(out, datagramOut{data: r.Packet.ToBytes(), dst: r.Dst})
		}
		errs = bw.write(out, errs)
		for i, r := range replies {
			s.sent(ctx, r.req, r.Reply, errs[i])
		}
	}
}

// reply is a request's reply on its way.
type reply struct {
	req Request
	Reply
}

// serve handles one queued request.
func (s *Server) serve(ctx context.Context, p datagram) {
	r, err := s.handler.handle(ctx, p.req, p.msg)
	if err != nil {
		s.noReply(p.req, err)
		return
	}
	_, err = p.conn.WriteToUDP(r.Packet.ToBytes(), r.Dst)
	s.sent(ctx, p.req, r, err)
}

// noReply counts and logs a request that gets no reply.
func (s *Server) noReply(req Request, err error) {
	result := reason(err)
	s.m.packets.WithLabelValues(portLabel(req.Port), result).Inc()
	switch {
	case errors.Is(err, ErrMalformed):
		s.m.malformed.Inc()
		s.log.Debug("dhcp packet dropped", "from", req.Src.String(), "err", err)
	case errors.Is(err, ErrDecision), errors.Is(err, ErrLeaseStore):
		s.log.Warn("dhcp no answer", "from", req.Src.String(), "err", err)
	case errors.Is(err, ErrRefused):
		s.log.Info("dhcp no answer: refused by the boot decision", "from", req.Src.String())
	default:
		s.log.Debug("dhcp no answer", "from", req.Src.String(), "reason", result, "err", err)
	}
}

// sent counts and logs a reply sent, or that failed to send (err).
func (s *Server) sent(ctx context.Context, req Request, r Reply, err error) {
	port := portLabel(req.Port)
	if err != nil {
		s.m.packets.WithLabelValues(port, "send_error").Inc()
		s.log.Warn("dhcp send reply", "mac", r.Client.MAC.String(), "to", r.Dst.String(), "err", err)
		return
	}
	s.m.packets.WithLabelValues(port, r.Kind).Inc()
	s.m.replies.WithLabelValues(r.Kind, r.Client.Arch.Name).Inc()
	s.logReply(ctx, r, req.Port)
	if s.opts.Answered != nil {
		s.opts.Answered(r.Client)
	}
}

// portLabel is a local port's metrics label.
func portLabel(port int) string {
	switch port {
	case ServerPort:
		return "67"
	case BootServerPort:
		return "4011"
	}
	return strconv.Itoa(port)
}

// logReply logs a sent offer or ack with the client's MAC and arch
// (typed attributes; uuid, file and port only when not empty or 67).
func (s *Server) logReply(ctx context.Context, r Reply, port int) {
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	file := r.Packet.BootFileName
	if file == "" {
		file = r.Packet.BootFileNameOption()
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("mac", r.Client.MAC.String()), slog.String("arch", r.Client.Arch.Name),
		slog.Bool("ipxe", r.Client.IPXE), slog.String("ip", r.Packet.YourIPAddr.String()))
	if r.Client.UUID != "" {
		attrs = append(attrs, slog.String("uuid", r.Client.UUID))
	}
	if file != "" {
		attrs = append(attrs, slog.String("file", file))
	}
	attrs = append(attrs, slog.String("to", r.Dst.String()))
	if port != ServerPort {
		attrs = append(attrs, slog.Int("port", port))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "dhcp "+r.Kind, attrs...)
}

// reason is err's metrics label.
func reason(err error) string {
	for _, e := range []struct {
		err   error
		label string
	}{
		{ErrMalformed, "malformed"}, {ErrNotRequest, "not_request"}, {ErrNotPXE, "not_pxe"},
		{ErrUnknownArch, "unknown_arch"}, {ErrNotForUs, "not_for_us"}, {ErrIgnoredType, "ignored_type"},
		{ErrRefused, "refused"}, {ErrDecision, "decision_error"}, {ErrNoServerIP, "no_server_ip"},
		{ErrNoAddress, "no_address"}, {ErrLeaseStore, "lease_store_error"},
	} {
		if errors.Is(err, e.err) {
			return e.label
		}
	}
	return "error"
}

// interfaceIPv4 is the interface's first IPv4 address.
func interfaceIPv4(name string) (*net.IPNet, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("dhcp: interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("dhcp: addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return &net.IPNet{IP: n.IP.To4(), Mask: n.Mask}, nil
		}
	}
	return nil, fmt.Errorf("dhcp: interface %s has no IPv4 address", name)
}

// socketBuffer is the receive and send buffer asked for each socket: a
// boot storm arrives in bursts, and the kernel's default (about 200 KiB,
// a few hundred packets) overflows while the readers are not scheduled.
const socketBuffer = 4 << 20

// setSocketBuffers enlarges c's buffers, beyond net.core.rmem_max and
// wmem_max when the process may (CAP_NET_ADMIN), else up to them.
func setSocketBuffers(c *net.UDPConn, log *slog.Logger) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain int }{
			{syscall.SO_RCVBUFFORCE, syscall.SO_RCVBUF}, {syscall.SO_SNDBUFFORCE, syscall.SO_SNDBUF},
		} {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o.force, socketBuffer) != nil {
				if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o.plain, socketBuffer); err != nil {
					log.Debug("dhcp socket buffer", "err", err)
				}
			}
		}
	})
}
