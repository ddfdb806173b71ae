package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/attestation/attestation/controlplane/store"
)

func testPool(start, end byte) Pool {
	return Pool{
		Subnet: &net.IPNet{IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(24, 32)},
		Start:  net.IPv4(10, 9, 0, start), End: net.IPv4(10, 9, 0, end),
		Router: testServerIP, DNS: []net.IP{testServerIP},
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func fullHandler(t testing.TB, p Pool, st LeaseStore, now func() time.Time) *Handler {
	t.Helper()
	l, err := newLeases(context.Background(), p, st, now)
	if err != nil {
		t.Fatal(err)
	}
	return &Handler{Mode: ModeFull, PublicURL: testPublicURL, Arch: DefaultArchTable(), leases: l}
}

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// exchange sends one message from hw and returns the reply (nil: none).
func exchange(t testing.TB, h *Handler, hw net.HardwareAddr, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(mt)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Handle(context.Background(), Request{Data: m.ToBytes(), Port: ServerPort, ServerIP: testServerIP})
	if err != nil {
		return nil, err
	}
	return dhcpv4.FromBytes(r.Packet.ToBytes())
}

// dora runs DISCOVER, REQUEST and returns the acknowledged address.
func dora(t testing.TB, h *Handler, hw net.HardwareAddr, mods ...dhcpv4.Modifier) (net.IP, error) {
	offer, err := exchange(t, h, hw, dhcpv4.MessageTypeDiscover, mods...)
	if err != nil {
		return nil, err
	}
	if offer.MessageType() != dhcpv4.MessageTypeOffer {
		return nil, fmt.Errorf("got %s, want OFFER", offer.MessageType())
	}
	ack, err := exchange(t, h, hw, dhcpv4.MessageTypeRequest, append(mods,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP)))...)
	if err != nil {
		return nil, err
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		return nil, fmt.Errorf("got %s of %s, want ACK of %s", ack.MessageType(), ack.YourIPAddr, offer.YourIPAddr)
	}
	return ack.YourIPAddr, nil
}

func TestFullDORA(t *testing.T) {
	h := fullHandler(t, testPool(100, 199), nil, nil)
	offer, err := exchange(t, h, mac(1), dhcpv4.MessageTypeDiscover)
	if err != nil {
		t.Fatal(err)
	}
	if !offer.YourIPAddr.Equal(net.IPv4(10, 9, 0, 100)) || offer.SubnetMask().String() != "ffffff00" ||
		len(offer.Router()) != 1 || offer.IPAddressLeaseTime(0) != 10*time.Minute || !offer.ServerIdentifier().Equal(testServerIP) {
		t.Errorf("got offer %s", offer.Summary())
	}
	if offer.BootFileName != "" {
		t.Errorf("a client that is not PXE got boot file %q", offer.BootFileName)
	}
	ip, err := dora(t, h, mac(1))
	if err != nil || !ip.Equal(net.IPv4(10, 9, 0, 100)) {
		t.Fatalf("got %s, %v, want 10.9.0.100 again for the same client", ip, err)
	}
	// A PXE client gets an address and its boot file.
	pxeOffer, err := exchange(t, h, mac(2), dhcpv4.MessageTypeDiscover, pxe(iana.EFI_X86_64)...)
	if err != nil {
		t.Fatal(err)
	}
	if !pxeOffer.YourIPAddr.Equal(net.IPv4(10, 9, 0, 101)) || pxeOffer.BootFileName != "snponly.efi" || !pxeOffer.ServerIPAddr.Equal(testServerIP) {
		t.Errorf("got PXE offer of %s with file %q next-server %s", pxeOffer.YourIPAddr, pxeOffer.BootFileName, pxeOffer.ServerIPAddr)
	}
	// Asking for another client's address: NAK.
	nak, err := exchange(t, h, mac(3), dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100))))
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("got %v, %v, want a NAK", nak, err)
	}
	// A REQUEST selecting another server drops our offer, unanswered.
	if _, err := exchange(t, h, mac(2), dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 9, 0, 2))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 9)))); !errors.Is(err, ErrNotForUs) {
		t.Errorf("got %v, want ErrNotForUs", err)
	}
	// INFORM: options, no address, to ciaddr.
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(4)), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 7)))
	r, err := h.Handle(context.Background(), Request{Data: m.ToBytes(), Port: ServerPort, ServerIP: testServerIP})
	if err != nil || r.Packet.MessageType() != dhcpv4.MessageTypeAck || !r.Packet.YourIPAddr.IsUnspecified() ||
		r.Packet.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || r.Dst.String() != "10.9.0.7:68" {
		t.Errorf("INFORM: got %+v, %v", r, err)
	}
}

func TestFullReservationsAndLimits(t *testing.T) {
	p := testPool(100, 103)
	p.Reservations = map[string]net.IP{mac(9).String(): net.IPv4(10, 9, 0, 50), mac(8).String(): net.IPv4(10, 9, 0, 101)}
	p.MaxUnknown = 2
	h := fullHandler(t, p, nil, nil)
	if ip, err := dora(t, h, mac(9)); err != nil || !ip.Equal(net.IPv4(10, 9, 0, 50)) {
		t.Fatalf("reserved client: got %s, %v, want 10.9.0.50", ip, err)
	}
	for i, want := range []string{"10.9.0.100", "10.9.0.102"} { // .101 is reserved
		if ip, err := dora(t, h, mac(20+i)); err != nil || ip.String() != want {
			t.Fatalf("unknown client %d: got %s, %v, want %s", i, ip, err, want)
		}
	}
	if _, err := dora(t, h, mac(30)); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("third unknown client: got %v, want no address (cap 2)", err)
	}
	if ip, err := dora(t, h, mac(8)); err != nil || !ip.Equal(net.IPv4(10, 9, 0, 101)) {
		t.Fatalf("reserved client past the unknown cap: got %s, %v, want 10.9.0.101", ip, err)
	}
}

func TestFullReleaseDeclineExpiry(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	h := fullHandler(t, testPool(100, 100), nil, c.now)
	ip, err := dora(t, h, mac(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dora(t, h, mac(2)); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("pool of one, second client: got %v, want no address", err)
	}
	exchange(t, h, mac(1), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip))
	if _, err := dora(t, h, mac(2)); err != nil {
		t.Fatalf("after RELEASE: %v", err)
	}
	exchange(t, h, mac(2), dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP)))
	if _, err := dora(t, h, mac(3)); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("after DECLINE the address is quarantined: got %v, want no address", err)
	}
	c.add(time.Hour + time.Second)
	if _, err := dora(t, h, mac(3)); err != nil {
		t.Fatalf("after the quarantine: %v", err)
	}
	c.add(10*time.Minute + time.Second)
	if _, err := dora(t, h, mac(4)); err != nil {
		t.Fatalf("after the lease expired: %v", err)
	}
}

// TestFullConcurrent: many clients at once never share an address, and a
// pool smaller than the crowd hands out each address once.
func TestFullConcurrent(t *testing.T) {
	h := fullHandler(t, testPool(1, 100), nil, nil)
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			ip, err := dora(t, h, mac(i))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := got[ip.String()]; dup {
				t.Errorf("%s given to both %s and %s", ip, other, mac(i))
			}
			got[ip.String()] = mac(i).String()
		})
	}
	wg.Wait()
	if len(got) != 100 {
		t.Errorf("got %d addresses handed out, want all 100", len(got))
	}
}

// TestFullDurable: leases in the database survive a restart: the client
// keeps its address and no one else gets it.
func TestFullDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	h := fullHandler(t, testPool(100, 101), SQLLeases{DB: st.DB()}, nil)
	ip1, err := dora(t, h, mac(1))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h = fullHandler(t, testPool(100, 101), SQLLeases{DB: st.DB()}, nil)
	ip2, err := dora(t, h, mac(2))
	if err != nil || ip2.Equal(ip1) {
		t.Fatalf("after restart another client got %s, %v; %s is leased", ip2, err, ip1)
	}
	if ip, err := dora(t, h, mac(1)); err != nil || !ip.Equal(ip1) {
		t.Fatalf("after restart the client got %s, %v, want its %s", ip, err, ip1)
	}
	// A release is stored too.
	exchange(t, h, mac(2), dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip2))
	got, err := SQLLeases{DB: st.DB()}.Leases(ctx)
	if err != nil || len(got) != 1 || !got[0].IP.Equal(ip1) {
		t.Fatalf("got stored leases %v, %v, want only %s's", got, err, ip1)
	}
}

// TestFullDurableConcurrent: concurrent clients' leases are committed in
// groups, and every acknowledged one is in the database.
func TestFullDurableConcurrent(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := fullHandler(t, testPool(1, 254), SQLLeases{DB: st.DB()}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for i := range 200 {
		wg.Go(func() {
			if _, err := dora(t, h, mac(i)); err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
	}
	wg.Wait()
	got, err := SQLLeases{DB: st.DB()}.Leases(ctx)
	if err != nil || len(got) != acked || acked != 200 {
		t.Fatalf("got %d stored leases (%v) for %d acks, want 200", len(got), err, acked)
	}
}

// TestSQLLeasesOrder: one SaveLeases applies its changes in order, runs
// of stored leases longer than one statement and repeated addresses
// included, deletes between them too.
func TestSQLLeasesOrder(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := SQLLeases{DB: st.DB()}
	exp := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	addr := func(i int) net.IP { return net.IPv4(10, 9, byte(i/250), byte(1+i%250)).To4() }
	want := map[string]Lease{}
	var changes []Lease
	add := func(l Lease) {
		changes = append(changes, l)
		if l.State == "" {
			delete(want, l.IP.String())
		} else {
			want[l.IP.String()] = l
		}
	}
	for i := range 300 { // more than maxUpsertRows, not a power of two
		add(Lease{IP: addr(i), MAC: mac(i).String(), State: LeaseBound, Expires: exp})
	}
	add(Lease{IP: addr(7)})                                                          // deleted
	add(Lease{IP: addr(8), MAC: "", State: LeaseDeclined, Expires: exp})             // replaced
	add(Lease{IP: addr(9), MAC: mac(999).String(), State: LeaseBound, Expires: exp}) // replaced ...
	add(Lease{IP: addr(9), MAC: mac(998).String(), State: LeaseBound, Expires: exp}) // ... twice in one run
	add(Lease{IP: addr(10)})
	add(Lease{IP: addr(10), MAC: mac(997).String(), State: LeaseBound, Expires: exp}) // deleted, then stored again
	if err := s.SaveLeases(ctx, changes); err != nil {
		t.Fatal(err)
	}
	got, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d leases, want %d", len(got), len(want))
	}
	for _, l := range got {
		w, ok := want[l.IP.String()]
		if !ok || l.MAC != w.MAC || l.State != w.State || !l.Expires.Equal(w.Expires) {
			t.Errorf("got %s: %s %s %v, want %+v", l.IP, l.MAC, l.State, l.Expires, w)
		}
	}
}
