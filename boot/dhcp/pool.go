package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Pool is full mode's address pool on the served subnet.
type Pool struct {
	// Subnet is the served network; Start..End (inclusive) the addresses
	// handed out dynamically.
	Subnet     *net.IPNet
	Start, End net.IP
	// Router and DNS are told to clients when set.
	Router net.IP
	DNS    []net.IP
	// LeaseTime is the lease of clients with a reservation (default 1h);
	// UnknownLeaseTime that of the others (default 10m), short so a
	// flood's addresses come back soon.
	LeaseTime, UnknownLeaseTime time.Duration
	// Reservations give a MAC (lower-case, colon-separated) its address,
	// inside or outside Start..End but inside Subnet.
	Reservations map[string]net.IP
	// MaxUnknown caps the leases held by clients without a reservation
	// (0: no cap below the pool's size), so a flood of random MACs cannot
	// take every address.
	MaxUnknown int
}

// Lease states.
const (
	LeaseOffered  = "offered"  // held for a DISCOVER, in memory only
	LeaseBound    = "bound"    // acknowledged, stored
	LeaseDeclined = "declined" // a client found the address in use
)

// offerHold is how long an offered address waits for its REQUEST.
const offerHold = 30 * time.Second

// Lease is one address's binding.
type Lease struct {
	IP      net.IP
	MAC     string
	State   string
	Expires time.Time
}

// LeaseStore keeps bound and declined leases across restarts.
type LeaseStore interface {
	Leases(ctx context.Context) ([]Lease, error)
	// SaveLeases applies the changes in order, all or none: each replaces
	// its address's lease, and one with an empty State deletes it.
	SaveLeases(ctx context.Context, changes []Lease) error
}

// leases is the allocator: the in-memory truth, under one mutex (so no
// address is handed to two clients), written through to the store
// before a client is told.
type leases struct {
	mu         sync.Mutex
	pool       Pool
	start, end uint32
	reservedIP map[uint32]string // address -> MAC it is reserved for
	byIP       map[uint32]*Lease
	byMAC      map[string]*Lease
	cursor     uint32
	store      LeaseStore
	now        func() time.Time
	group      group
}

var (
	errPoolFull   = errors.New("no free address")
	errUnknownCap = errors.New("unknown clients' lease cap reached")
)

func ip4(ip net.IP) uint32 {
	if v := ip.To4(); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func fromU32(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// newLeases checks the pool and loads the stored leases.
func newLeases(ctx context.Context, p Pool, st LeaseStore, now func() time.Time) (*leases, error) {
	if p.Subnet == nil || p.Subnet.IP.To4() == nil {
		return nil, errors.New("pool: no IPv4 subnet")
	}
	if !p.Subnet.Contains(p.Start) || !p.Subnet.Contains(p.End) || ip4(p.Start) > ip4(p.End) {
		return nil, fmt.Errorf("pool: range %s-%s not inside %s", p.Start, p.End, p.Subnet)
	}
	if p.LeaseTime <= 0 {
		p.LeaseTime = time.Hour
	}
	if p.UnknownLeaseTime <= 0 {
		p.UnknownLeaseTime = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	l := &leases{pool: p, start: ip4(p.Start), end: ip4(p.End), reservedIP: map[uint32]string{},
		byIP: map[uint32]*Lease{}, byMAC: map[string]*Lease{}, store: st, now: now}
	l.cursor = l.start
	for mac, ip := range p.Reservations {
		if !p.Subnet.Contains(ip) {
			return nil, fmt.Errorf("pool: reservation %s for %s not inside %s", ip, mac, p.Subnet)
		}
		if other, dup := l.reservedIP[ip4(ip)]; dup {
			return nil, fmt.Errorf("pool: %s reserved for both %s and %s", ip, other, mac)
		}
		l.reservedIP[ip4(ip)] = strings.ToLower(mac)
	}
	if st != nil {
		stored, err := st.Leases(ctx)
		if err != nil {
			return nil, fmt.Errorf("load leases: %w", err)
		}
		for i := range stored {
			s := stored[i]
			l.byIP[ip4(s.IP)] = &s
			if s.State == LeaseBound {
				l.byMAC[s.MAC] = &s
			}
		}
	}
	return l, nil
}

// active reports whether a lease still holds its address.
func (l *leases) active(x *Lease) bool { return x != nil && l.now().Before(x.Expires) }

// free reports whether ip can go to mac.
func (l *leases) free(ip uint32, mac string) bool {
	if r, ok := l.reservedIP[ip]; ok && r != mac {
		return false
	}
	x := l.byIP[ip]
	return !l.active(x) || (x.MAC == mac && x.State != LeaseDeclined)
}

func (l *leases) unknownActive() int {
	n := 0
	for ip, x := range l.byIP {
		if _, res := l.reservedIP[ip]; !res && x.State != LeaseDeclined && l.active(x) {
			n++
		}
	}
	return n
}

func (l *leases) drop(x *Lease) {
	delete(l.byIP, ip4(x.IP))
	if l.byMAC[x.MAC] == x {
		delete(l.byMAC, x.MAC)
	}
}

// offer picks an address for mac's DISCOVER and holds it briefly.
func (l *leases) offer(mac string, requested net.IP) (net.IP, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if x := l.byMAC[mac]; x != nil && l.free(ip4(x.IP), mac) {
		if x.State == LeaseOffered {
			x.Expires = l.now().Add(offerHold)
		}
		return x.IP, nil
	}
	var pick uint32
	if r, ok := l.pool.Reservations[mac]; ok {
		if !l.free(ip4(r), mac) {
			return nil, fmt.Errorf("%w: reserved %s is in use", errPoolFull, r)
		}
		pick = ip4(r)
	} else {
		if l.pool.MaxUnknown > 0 && l.unknownActive() >= l.pool.MaxUnknown {
			return nil, errUnknownCap
		}
		if r := ip4(requested); r >= l.start && r <= l.end && l.free(r, mac) {
			pick = r
		} else {
			size := l.end - l.start + 1
			for i := uint32(0); i < size; i++ {
				c := l.start + (l.cursor-l.start+i)%size
				if l.free(c, mac) {
					pick = c
					l.cursor = c + 1
					if l.cursor > l.end {
						l.cursor = l.start
					}
					break
				}
			}
			if pick == 0 {
				return nil, errPoolFull
			}
		}
	}
	if old := l.byMAC[mac]; old != nil {
		l.drop(old)
	}
	x := &Lease{IP: fromU32(pick), MAC: mac, State: LeaseOffered, Expires: l.now().Add(offerHold)}
	l.byIP[pick] = x
	l.byMAC[mac] = x
	return x.IP, nil
}

// leaseTime is mac's lease duration.
func (l *leases) leaseTime(mac string) time.Duration {
	if _, ok := l.pool.Reservations[mac]; ok {
		return l.pool.LeaseTime
	}
	return l.pool.UnknownLeaseTime
}

// bind acknowledges ip to mac (REQUEST), storing the lease first; it
// fails when ip is not mac's to have.
func (l *leases) bind(ctx context.Context, mac string, ip net.IP) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := ip4(ip)
	if !l.pool.Subnet.Contains(ip) {
		return 0, fmt.Errorf("%s is not on %s", ip, l.pool.Subnet)
	}
	r, reserved := l.pool.Reservations[mac]
	switch {
	case reserved && ip4(r) == v:
	case reserved:
		return 0, fmt.Errorf("%s is reserved %s", mac, r)
	case v < l.start || v > l.end:
		return 0, fmt.Errorf("%s is outside the pool", ip)
	}
	if !l.free(v, mac) {
		return 0, fmt.Errorf("%s is leased to another client", ip)
	}
	if x := l.byIP[v]; x == nil || x.MAC != mac {
		// Init-reboot after the offer expired, or a client we forgot:
		// the unknown cap still applies.
		if !reserved && l.pool.MaxUnknown > 0 && l.unknownActive() >= l.pool.MaxUnknown {
			return 0, errUnknownCap
		}
	}
	d := l.leaseTime(mac)
	x := &Lease{IP: fromU32(v), MAC: mac, State: LeaseBound, Expires: l.now().Add(d)}
	if old := l.byMAC[mac]; old != nil {
		l.drop(old)
	}
	if old := l.byIP[v]; old != nil {
		l.drop(old)
	}
	l.byIP[v] = x
	l.byMAC[mac] = x
	// Stored before the client is told, outside the mutex so one commit
	// carries the leases of every client waiting; the address is already
	// held in memory, so no other client can take it meanwhile.
	l.mu.Unlock()
	err := l.save(ctx, *x)
	l.mu.Lock()
	if err != nil {
		if l.byIP[v] == x {
			l.drop(x)
		}
		return 0, err
	}
	return d, nil
}

// save stores a change through the group commit.
func (l *leases) save(ctx context.Context, x Lease) error {
	if l.store == nil {
		return nil
	}
	if err := l.group.do(ctx, l.store, x); err != nil {
		return fmt.Errorf("%w: %v", ErrLeaseStore, err)
	}
	return nil
}

// group batches concurrent lease changes into one SaveLeases call: the
// first caller commits what is pending while the others wait, then
// commits what queued up meanwhile, until nothing is left.
type group struct {
	mu       sync.Mutex
	pending  []*change
	flushing bool
	last     int // leases in the last commit
}

// groupLinger is how long a commit waits for more leases under load.
const groupLinger = 500 * time.Microsecond

type change struct {
	lease Lease
	err   error
	done  chan struct{}
}

func (g *group) do(ctx context.Context, st LeaseStore, x Lease) error {
	c := &change{lease: x, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.flushing {
		g.mu.Unlock()
		<-c.done
		return c.err
	}
	g.flushing = true
	for len(g.pending) > 0 {
		if g.last > 1 {
			// Under load (the last commit carried several leases):
			// wait a little for more, so fewer commits carry them.
			g.mu.Unlock()
			time.Sleep(groupLinger)
			g.mu.Lock()
		}
		batch := g.pending
		g.pending = nil
		g.last = len(batch)
		g.mu.Unlock()
		changes := make([]Lease, len(batch))
		for i, b := range batch {
			changes[i] = b.lease
		}
		// Not the caller's ctx: the batch carries other clients' leases.
		err := st.SaveLeases(context.WithoutCancel(ctx), changes)
		for _, b := range batch {
			b.err = err
			close(b.done)
		}
		g.mu.Lock()
	}
	g.flushing = false
	g.mu.Unlock()
	return c.err
}

// forget drops an offer the client did not take (it chose another
// server).
func (l *leases) forget(mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if x := l.byMAC[mac]; x != nil && x.State == LeaseOffered {
		l.drop(x)
	}
}

// release ends mac's lease on ip (RELEASE).
func (l *leases) release(ctx context.Context, mac string, ip net.IP) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := l.byIP[ip4(ip)]
	if x == nil || x.MAC != mac {
		return nil
	}
	l.drop(x)
	if x.State == LeaseBound {
		l.mu.Unlock()
		defer l.mu.Lock()
		return l.save(ctx, Lease{IP: x.IP})
	}
	return nil
}

// decline quarantines ip for a lease time (DECLINE: a client found it in
// use on the wire).
func (l *leases) decline(ctx context.Context, mac string, ip net.IP) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := ip4(ip)
	x := l.byIP[v]
	if x == nil || x.MAC != mac {
		return nil
	}
	d := &Lease{IP: x.IP, MAC: "", State: LeaseDeclined, Expires: l.now().Add(l.pool.LeaseTime)}
	l.drop(x)
	l.byIP[v] = d
	l.mu.Unlock()
	defer l.mu.Lock()
	return l.save(ctx, *d)
}
