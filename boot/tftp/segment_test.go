package tftp

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSegmentRun(t *testing.T) {
	// sizes makes datagrams of the lengths given, count times each
	// (count, length pairs).
	sizes := func(pairs ...int) [][]byte {
		var ds [][]byte
		for i := 0; i < len(pairs); i += 2 {
			for range pairs[i] {
				ds = append(ds, make([]byte, pairs[i+1]))
			}
		}
		return ds
	}
	for _, tc := range []struct {
		name      string
		datagrams [][]byte
		want      int
	}{
		{"one", sizes(1, 1472), 1},
		{"equal", sizes(3, 1472), 3},
		{"the last shorter", sizes(2, 1472, 1, 100), 3},
		{"a shorter one ends the run", sizes(1, 1472, 1, 100, 1, 1472), 2},
		{"a longer one ends the run", sizes(1, 100, 1, 1472), 1},
		{"an empty last block", sizes(2, 516, 1, 4), 3},
		{"64 KB at most", sizes(70, 1472), 44},
		{"64 datagrams at most", sizes(100, 516), maxSegments},
	} {
		if got := segmentRun(tc.datagrams); got != tc.want {
			t.Errorf("%s: segmentRun = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSegmentConn sends windows through a transfer socket on loopback:
// the peer gets each block as a datagram of its own, in order.
func TestSegmentConn(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for _, laddr := range []*net.UDPAddr{{IP: net.IPv4(127, 0, 0, 1)}, {}} {
		t.Run(fmt.Sprintf("bound to %v", laddr.IP), func(t *testing.T) {
			pc, err := listenTransfer(laddr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			var window [][]byte
			for i := range 50 {
				n := 1472
				if i == 49 {
					n = 300
				}
				window = append(window, bytes.Repeat([]byte{byte(i)}, n))
			}
			if err := pc.(*segmentConn).WriteBatchTo(window, peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if pc.(*segmentConn).off {
				t.Errorf("the kernel refused UDP_SEGMENT on loopback: the window went out one datagram at a time")
			}
			receive(t, peer, window)
		})
	}
}

// receive reads from peer the datagrams of window, each as one datagram,
// in order.
func receive(t *testing.T, peer *net.UDPConn, window [][]byte) {
	t.Helper()
	buf := make([]byte, 65536)
	for i, want := range window {
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d bytes of %d", i, n, buf[0], len(want), want[0])
		}
	}
}

// TestSegmentFallback: when the kernel refuses a segmented send (here
// because the socket sends without UDP checksums, SO_NO_CHECK), the
// window still arrives, one datagram at a time, and the refusal is
// reported once for the socket.
func TestSegmentFallback(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	var refusals []error
	pc, err := listenTransfer(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, func(_ net.Addr, err error) { refusals = append(refusals, err) })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := pc.(*segmentConn)
	var serr error
	if err := c.raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_NO_CHECK: %v %v", err, serr)
	}
	var window [][]byte
	for i := range 4 {
		window = append(window, bytes.Repeat([]byte{byte(i)}, 1472))
	}
	for range 2 {
		if err := c.WriteBatchTo(window, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		receive(t, peer, window)
	}
	if !c.off || len(refusals) != 1 || refusals[0] == nil {
		t.Errorf("off %v, refusals %v; want off after one refusal reported", c.off, refusals)
	}
}
