// Package ndp ends iPXE's wait for IPv6 routers on a link that has none.
//
// iPXE configures a network device with all its configurators at once,
// DHCP and IPv6 autoconfiguration, and fetches its boot file only when
// both are done. Where no router advertises, it waits out its router
// solicitations: about 15 s under emulation, several seconds on hardware,
// on every network boot. A router advertisement with router lifetime 0,
// no prefix and neither the managed nor the other-configuration flag ends
// that wait at once and configures nothing: the machine boots over IPv4
// as DHCP told it.
//
// The Responder sends one only to a machine the DHCP server has just
// answered as an iPXE client (Expect), unicast to the address it
// solicited from, so that no other host on the link sees it; and none
// while another router advertises on the link, where iPXE configures
// IPv6 from that router.
package ndp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv6"
)

// Options configure a Responder.
type Options struct {
	// Interface is the network interface to answer on (the PXE
	// interface).
	Interface string
	// Window is how long after Expect a machine's solicitations are
	// answered (default 1 minute: iPXE solicits for about 15 s).
	Window time.Duration
	// Quiet is how long an advertisement from another router keeps the
	// Responder silent (default 1 hour: routers advertise at least every
	// 30 minutes, RFC 4861 6.2.1).
	Quiet  time.Duration
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
}

const (
	defaultWindow = time.Minute
	defaultQuiet  = time.Hour
)

// allRouters is where solicitations go (RFC 4291 2.7.1).
var allRouters = net.ParseIP("ff02::2")

// Results of a solicitation, the metric's labels.
const (
	resultAnswered     = "answered"
	resultNotExpected  = "not_expected"
	resultRouter       = "router_present"
	resultNoSource     = "no_source"
	resultNoLinkLayer  = "no_link_layer_address"
	resultMalformed    = "malformed"
	resultSendError    = "send_error"
	resultNotLinkLocal = "not_link_local"
)

// Responder answers the router solicitations of expected machines.
type Responder struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	expected map[string]time.Time // MAC to when Expect was called
	pruned   time.Time
	router   net.IP    // another router heard on the link
	heard    time.Time // when it last advertised

	solicitations *prometheus.CounterVec
}

// New checks the options and returns a Responder ready to Run.
func New(opts Options) (*Responder, error) {
	if opts.Interface == "" {
		return nil, errors.New("ndp: no interface")
	}
	if opts.Window <= 0 {
		opts.Window = defaultWindow
	}
	if opts.Quiet <= 0 {
		opts.Quiet = defaultQuiet
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Responder{
		opts: opts, log: log, now: time.Now, expected: map[string]time.Time{},
		solicitations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "attestation_ndp_solicitations_total",
			Help: "IPv6 router solicitations received on the PXE interface, by result (answered, or why not)."}, []string{"result"}),
	}
	if reg := opts.Registerer; reg != nil {
		if err := reg.Register(r.solicitations); err != nil {
			return nil, fmt.Errorf("ndp: register metrics: %w", err)
		}
	}
	return r, nil
}

// Expect makes the Responder answer mac's solicitations for the next
// Window. It is safe for concurrent use.
func (r *Responder) Expect(mac net.HardwareAddr) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expected[mac.String()] = now
	// At most one sweep per window: a boot storm adds many.
	if now.Sub(r.pruned) > r.opts.Window {
		for k, at := range r.expected {
			if now.Sub(at) > r.opts.Window {
				delete(r.expected, k)
			}
		}
		r.pruned = now
	}
}

// decide says whether to answer a solicitation s from src (the result
// label resultAnswered) or why not.
func (r *Responder) decide(s solicitation, src net.IP) string {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case src == nil || src.IsUnspecified():
		// Nothing to answer to: the client has no address yet.
		return resultNoSource
	case !src.IsLinkLocalUnicast():
		return resultNotLinkLocal
	case s.mac == nil:
		return resultNoLinkLayer
	case r.router != nil && now.Sub(r.heard) < r.opts.Quiet:
		return resultRouter
	}
	at, ok := r.expected[s.mac.String()]
	if !ok || now.Sub(at) > r.opts.Window {
		return resultNotExpected
	}
	return resultAnswered
}

// heardRouter records an advertisement from another router, src; it
// reports whether that router is news (none was heard within Quiet).
func (r *Responder) heardRouter(src net.IP) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	news := r.router == nil || now.Sub(r.heard) >= r.opts.Quiet || !r.router.Equal(src)
	r.router, r.heard = src, now
	return news
}

// Run answers solicitations until ctx is done, then returns nil. When it
// cannot listen (no IPv6 on the interface, no CAP_NET_RAW) it logs why
// and returns nil: machines then boot as before, after iPXE's wait.
func (r *Responder) Run(ctx context.Context) error {
	p, ifi, err := r.listen(ctx)
	if err != nil {
		r.log.Warn("ndp not answering IPv6 router solicitations", "interface", r.opts.Interface, "err", err,
			"effect", "iPXE waits for IPv6 routers on each network boot where none advertises")
		return nil
	}
	defer p.Close()
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	// Whatever routers the link has answer this: a site's router is
	// heard before the first machine boots.
	if _, err := p.WriteTo(routerSolicitation(ifi.HardwareAddr), nil, &net.IPAddr{IP: allRouters, Zone: ifi.Name}); err != nil {
		r.log.Debug("ndp router solicitation not sent", "err", err)
	}
	r.log.Info("ndp answering router solicitations", "interface", ifi.Name)
	// Every answer is the same message.
	ra := advertisement(ifi.HardwareAddr)
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ndp: read on %s: %w", ifi.Name, err)
		}
		// NDP comes from the link itself (RFC 4861 6.1): a hop limit
		// below 255 was routed here.
		if cm == nil || cm.HopLimit != 255 || n < 1 {
			continue
		}
		from, _ := src.(*net.IPAddr)
		if from == nil {
			continue
		}
		switch buf[0] {
		case typeRouterAdvertisement:
			if r.heardRouter(from.IP) {
				r.log.Info("ndp another router advertises on the link: not answering solicitations", "router", from.IP.String(),
					"for", r.opts.Quiet)
			}
		case typeRouterSolicitation:
			r.answer(p, ra, ifi.Name, buf[:n], from)
		}
	}
}

// answer answers one solicitation, b from from on the interface zone,
// with the advertisement ra when decide says so.
func (r *Responder) answer(p *ipv6.PacketConn, ra []byte, zone string, b []byte, from *net.IPAddr) {
	s, err := parseSolicitation(b)
	if err != nil {
		r.solicitations.WithLabelValues(resultMalformed).Inc()
		r.log.Debug("ndp solicitation dropped", "from", from.String(), "err", err)
		return
	}
	result := r.decide(s, from.IP)
	if result != resultAnswered {
		r.solicitations.WithLabelValues(result).Inc()
		r.log.Debug("ndp solicitation not answered", "from", from.String(), "mac", s.mac.String(), "reason", result)
		return
	}
	to := &net.IPAddr{IP: from.IP, Zone: zone}
	if _, err := p.WriteTo(ra, nil, to); err != nil {
		r.solicitations.WithLabelValues(resultSendError).Inc()
		r.log.Warn("ndp router advertisement not sent", "mac", s.mac.String(), "to", to.String(), "err", err)
		return
	}
	r.solicitations.WithLabelValues(resultAnswered).Inc()
	r.log.Info("ndp router advertisement", "mac", s.mac.String(), "to", to.String())
}

// listen opens an ICMPv6 socket on the interface that receives router
// solicitations and advertisements and sends with hop limit 255.
func (r *Responder) listen(ctx context.Context) (*ipv6.PacketConn, *net.Interface, error) {
	ifi, err := net.InterfaceByName(r.opts.Interface)
	if err != nil {
		return nil, nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, ifi.Name)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(ctx, "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, nil, err
	}
	p := ipv6.NewPacketConn(c)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	for _, set := range []func() error{
		func() error { return p.SetICMPFilter(&f) },
		func() error { return p.SetControlMessage(ipv6.FlagHopLimit, true) },
		func() error { return p.SetHopLimit(255) },
		func() error { return p.SetMulticastHopLimit(255) },
		func() error { return p.SetMulticastInterface(ifi) },
		func() error { return p.SetMulticastLoopback(false) },
		// Solicitations go to all routers, a group hosts do not join.
		func() error { return p.JoinGroup(ifi, &net.IPAddr{IP: allRouters}) },
	} {
		if err := set(); err != nil {
			p.Close()
			return nil, nil, err
		}
	}
	return p, ifi, nil
}
