package tftp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// makeWindowServer serves, for a read request of the name "N", N bytes
// of newRandReader(42), granting windows of up to max blocks.
func makeWindowServer(t *testing.T, max int) (*Server, string) {
	t.Helper()
	s := NewServer(func(filename string, rf io.ReaderFrom) error {
		n, err := strconv.ParseInt(filename, 10, 64)
		if err != nil {
			return err
		}
		rf.(OutgoingTransfer).SetSize(n)
		_, err = rf.ReadFrom(io.LimitReader(newRandReader(rand.NewSource(42)), n))
		return err
	}, nil)
	s.SetWindowSize(max)
	s.SetTimeout(time.Second)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(conn)
	t.Cleanup(s.Shutdown)
	return s, localSystem(conn)
}

func TestWindowSizeReceive(t *testing.T) {
	s, addr := makeWindowServer(t, 16)
	th := newTestHook()
	s.SetHook(th)
	for _, tc := range []struct {
		window, blksize int
		length          int64
	}{
		{16, 0, 0},
		{16, 0, 511},
		{16, 0, 512},
		{16, 0, 16 * 512},
		{16, 0, 16*512 + 1},
		{2, 0, 100000},
		{64, 0, 100000}, // granted 16
		{8, 1468, 1 << 20},
		{16, 0, 65535*512 + 1}, // block numbers wrap around
	} {
		t.Run(fmt.Sprintf("window %d length %d", tc.window, tc.length), func(t *testing.T) {
			c, err := NewClient(addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetWindowSize(tc.window)
			if tc.blksize != 0 {
				c.SetBlockSize(tc.blksize)
			}
			wt, err := c.Receive(strconv.FormatInt(tc.length, 10), "octet")
			if err != nil {
				t.Fatalf("requesting read: %v", err)
			}
			buf := &bytes.Buffer{}
			n, err := wt.WriteTo(buf)
			if err != nil {
				t.Fatalf("read error: %v", err)
			}
			want, _ := io.ReadAll(io.LimitReader(newRandReader(rand.NewSource(42)), tc.length))
			if n != tc.length || !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("received %d bytes (n=%d), want the %d sent", buf.Len(), n, tc.length)
			}
			if r := wt.(*receiver); r.window != min(tc.window, 16) {
				t.Errorf("negotiated window %d, want %d", r.window, min(tc.window, 16))
			}
		})
	}
	th.Lock()
	defer th.Unlock()
	if th.transfersCompleted != 9 || th.transfersFailed != 0 {
		t.Errorf("hook: %d completed, %d failed; want 9 and 0", th.transfersCompleted, th.transfersFailed)
	}
}

// rawPeer is one end of a transfer driven packet by packet by a test.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newRawPeer(t *testing.T, to string) *rawPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(localhost)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &rawPeer{t: t, conn: conn}
	if to != "" {
		if p.to, err = net.ResolveUDPAddr("udp", to); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDP(b, p.to); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) ack(block uint16) {
	p.t.Helper()
	p.send(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), block))
}

// read returns the next packet, nil when none comes within d. The first
// packet read sets where the next ones are sent.
func (p *rawPeer) read(d time.Duration) interface{} {
	p.t.Helper()
	b := make([]byte, 2000)
	p.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := p.conn.ReadFromUDP(b)
	if err != nil {
		return nil
	}
	p.to = from
	pk, err := parsePacket(b[:n])
	if err != nil {
		p.t.Fatalf("parse %x: %v", b[:n], err)
	}
	return pk
}

// blocks reads DATA packets and returns their block numbers: the first
// within first, the next ones until none comes within quiet.
func (p *rawPeer) blocks(first, quiet time.Duration) []uint16 {
	p.t.Helper()
	var got []uint16
	for d := first; ; d = quiet {
		switch pk := p.read(d).(type) {
		case nil:
			return got
		case pDATA:
			got = append(got, pk.block())
		default:
			p.t.Fatalf("got %T %q, want DATA", pk, pk)
		}
	}
}

func rrq(name string, opts options) []byte {
	b := make([]byte, 600)
	return b[:packRQ(b, opRRQ, name, "octet", opts)]
}

func TestWindowSizeOACK(t *testing.T) {
	for _, tc := range []struct {
		max, asked int
		want       string
	}{
		{16, 8, "8"},
		{16, 64, "16"},
		{16, 1, "1"},
		{0, 8, ""}, // not acknowledged: lockstep
		{1, 8, ""},
	} {
		t.Run(fmt.Sprintf("max %d asked %d", tc.max, tc.asked), func(t *testing.T) {
			_, addr := makeWindowServer(t, tc.max)
			p := newRawPeer(t, addr)
			p.send(rrq("100", options{"windowsize": strconv.Itoa(tc.asked), "tsize": "0"}))
			oack, ok := p.read(2 * time.Second).(pOACK)
			if !ok {
				t.Fatalf("no OACK")
			}
			opts, _ := unpackOACK(oack)
			if got := opts["windowsize"]; got != tc.want || opts["tsize"] != "100" {
				t.Errorf("OACK %v: windowsize %q, want %q (tsize 100)", opts, got, tc.want)
			}
			p.send(packetERROR(0, "done"))
		})
	}
}

func packetERROR(code uint16, msg string) []byte {
	b := make([]byte, 5+len(msg)+2)
	return b[:packERROR(b, code, msg)]
}

func TestWindowSizeRefused(t *testing.T) {
	s, addr := makeWindowServer(t, 16)
	th := newTestHook()
	s.SetHook(th)
	for _, value := range []string{"0", "65536", "-1", "sixteen", ""} {
		t.Run(value, func(t *testing.T) {
			p := newRawPeer(t, addr)
			p.send(rrq("100", options{"windowsize": value, "blksize": "1024"}))
			e, ok := p.read(2 * time.Second).(pERROR)
			if !ok {
				t.Fatalf("no ERROR packet")
			}
			if e.code() != 8 || !strings.Contains(e.message(), "windowsize") {
				t.Errorf("ERROR code %d %q, want code 8 naming windowsize", e.code(), e.message())
			}
			if pk := p.read(200 * time.Millisecond); pk != nil {
				t.Errorf("after the ERROR: %T, want nothing", pk)
			}
		})
	}
	th.Lock()
	defer th.Unlock()
	if th.transfersFailed != 5 {
		t.Errorf("hook: %d failed, want 5", th.transfersFailed)
	}
}

// TestWindowSizeLostBlocks plays the client of a windowed transfer of 10
// blocks and 512-byte blocks (and an empty eleventh) that loses some.
func TestWindowSizeLostBlocks(t *testing.T) {
	_, addr := makeWindowServer(t, 4)
	p := newRawPeer(t, addr)
	p.send(rrq("5120", options{"windowsize": "4"}))
	if _, ok := p.read(2 * time.Second).(pOACK); !ok {
		t.Fatal("no OACK")
	}
	const quiet = 150 * time.Millisecond
	for i, step := range []struct {
		ack  uint16
		want []uint16
	}{
		{0, []uint16{1, 2, 3, 4}},
		{2, []uint16{3, 4, 5, 6}},  // 3 lost: from 3 again
		{6, []uint16{7, 8, 9, 10}}, // the window slides
		{6, []uint16{7, 8, 9, 10}}, // a duplicate ACK: sent again, once
		{6, nil},                   // not again
		{10, []uint16{11}},         // the final, empty block
	} {
		p.ack(step.ack)
		if got := p.blocks(quiet, quiet); fmt.Sprint(got) != fmt.Sprint(step.want) {
			t.Fatalf("step %d, ACK %d: blocks %v, want %v", i, step.ack, got, step.want)
		}
	}
	// No ACK: after the timeout (1 s) the window is sent again.
	if got := p.blocks(3*time.Second, quiet); fmt.Sprint(got) != "[11]" {
		t.Fatalf("without an ACK: blocks %v, want [11] again", got)
	}
	p.ack(11)
	if pk := p.read(quiet); pk != nil {
		t.Errorf("after the last ACK: %T, want nothing", pk)
	}
}

// TestWindowSizeClientLostBlocks plays the server of a windowed transfer
// to the client, losing block 3.
func TestWindowSizeClientLostBlocks(t *testing.T) {
	srv := newRawPeer(t, "")
	c, err := NewClient(srv.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetWindowSize(4)
	c.SetTimeout(500 * time.Millisecond)
	got := make(chan []byte, 1)
	go func() {
		wt, err := c.Receive("f", "octet")
		if err != nil {
			t.Errorf("Receive: %v", err)
			got <- nil
			return
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil {
			t.Errorf("WriteTo: %v", err)
		}
		got <- b.Bytes()
	}()
	if _, ok := srv.read(2 * time.Second).(pRRQ); !ok {
		t.Fatal("no RRQ")
	}
	oack := make([]byte, 100)
	srv.send(oack[:packOACK(oack, options{"windowsize": "4"})])
	data := func(block uint16) []byte {
		b := make([]byte, 4, 516)
		binary.BigEndian.PutUint16(b, opDATA)
		binary.BigEndian.PutUint16(b[2:], block)
		if block < 6 {
			b = append(b, bytes.Repeat([]byte{byte(block)}, 512)...)
		}
		return b
	}
	expectACK := func(want uint16) {
		t.Helper()
		a, ok := srv.read(2 * time.Second).(pACK)
		if !ok || a.block() != want {
			t.Fatalf("got %v, want ACK %d", a, want)
		}
	}
	expectACK(0)
	for _, b := range []uint16{1, 2, 4} {
		srv.send(data(b))
	}
	expectACK(2) // at once, for the block out of order
	for _, b := range []uint16{5, 3, 4, 5} {
		srv.send(data(b)) // 5 early: no second ACK until 3 comes
	}
	for _, b := range []uint16{6} {
		srv.send(data(b))
	}
	expectACK(6) // the final block
	var want []byte
	for b := byte(1); b < 6; b++ {
		want = append(want, bytes.Repeat([]byte{b}, 512)...)
	}
	if g := <-got; !bytes.Equal(g, want) {
		t.Errorf("received %d bytes, want %d", len(g), len(want))
	}
}

func TestWindowSizeClientRefusesLargerWindow(t *testing.T) {
	srv := newRawPeer(t, "")
	c, err := NewClient(srv.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetWindowSize(4)
	done := make(chan error, 1)
	go func() {
		_, err := c.Receive("f", "octet")
		done <- err
	}()
	if _, ok := srv.read(2 * time.Second).(pRRQ); !ok {
		t.Fatal("no RRQ")
	}
	oack := make([]byte, 100)
	srv.send(oack[:packOACK(oack, options{"windowsize": "8"})])
	if e, ok := srv.read(2 * time.Second).(pERROR); !ok || e.code() != 8 {
		t.Errorf("got %v, want ERROR code 8", e)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "windowsize") {
		t.Errorf("Receive: %v, want the windowsize error", err)
	}
}

// batchConn is a transfer socket from SetTransferConn that counts the
// windows it was given whole.
type batchConn struct {
	*net.UDPConn
	batches, datagrams *int
}

func (c batchConn) WriteBatchTo(datagrams [][]byte, addr net.Addr) error {
	*c.batches++
	for _, d := range datagrams {
		*c.datagrams++
		if _, err := c.WriteTo(d, addr); err != nil {
			return err
		}
	}
	return nil
}

func TestTransferConnBatches(t *testing.T) {
	s, addr := makeWindowServer(t, 8)
	var opened, batches, datagrams int
	s.SetTransferConn(func(laddr *net.UDPAddr) (net.PacketConn, error) {
		opened++
		c, err := net.ListenUDP("udp", laddr)
		return batchConn{c, &batches, &datagrams}, err
	})
	c, err := NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetWindowSize(8)
	const length = 100 * 512 // 100 blocks and an empty one: 13 windows
	wt, err := c.Receive(strconv.Itoa(length), "octet")
	if err != nil {
		t.Fatal(err)
	}
	n, err := wt.WriteTo(io.Discard)
	if err != nil || n != length {
		t.Fatalf("received %d bytes, %v; want %d", n, err, length)
	}
	s.Shutdown()
	if opened != 1 || batches != 13 || datagrams != 101 {
		t.Errorf("%d sockets opened, %d batches of %d datagrams; want 1, 13 and 101", opened, batches, datagrams)
	}
}
