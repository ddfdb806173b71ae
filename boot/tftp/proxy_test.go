package tftp

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
)

// lossyProxy stands between one TFTP client and a server on loopback and
// loses one DATA packet in every dataEvery and one ACK in every ackEvery
// that it relays.
// The client sends its request to Addr; the proxy relays it to the server
// from a socket of its own, and the server's answers to the client from
// another (the transfer's port, as the client sees it), so the whole
// transfer goes through it.
type lossyProxy struct {
	Addr string
	mu   sync.Mutex
	// seen and lost count the packets relayed and lost, by opcode.
	seen, lost map[uint16]int
}

// newLossyProxy relays to server, losing the dataEvery-th DATA packet, the
// 2*dataEvery-th and so on, and likewise for ACKs: which blocks that hits
// depends on the order the packets come in, not how many. Only one
// transfer at a time.
func newLossyProxy(t *testing.T, server string, dataEvery, ackEvery int) *lossyProxy {
	t.Helper()
	srv, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// requests: what the client sends its request to; up: to the server;
	// down: the server's transfer port, to the client.
	requests, up, down := listen(), listen(), listen()
	lp := &lossyProxy{Addr: requests.LocalAddr().String(), seen: map[uint16]int{}, lost: map[uint16]int{}}
	every := map[uint16]int{3: dataEvery, 4: ackEvery}
	// longest is the longest DATA packet relayed, final the number of the
	// first shorter one.
	var (
		longest int
		final   uint16
	)
	var (
		mu       sync.Mutex
		client   *net.UDPAddr // the client's address
		transfer *net.UDPAddr // the server's transfer port
	)
	lose := func(b []byte) bool {
		if len(b) < 4 {
			return false
		}
		op, block := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		lp.mu.Lock()
		defer lp.mu.Unlock()
		// The ACK of the final block (the first shorter than the others)
		// gets through: a server that misses it sends the block again
		// until its retries run out, while the client is long done.
		if op == 3 {
			if len(b) > longest {
				longest = len(b)
			} else if len(b) < longest {
				final = block
			}
		}
		if every[op] == 0 || op == 4 && final != 0 && block == final {
			return false
		}
		if lp.seen[op]++; lp.seen[op]%every[op] != 0 {
			return false
		}
		lp.lost[op]++
		return true
	}
	relay := func(from *net.UDPConn, handle func(b []byte, src *net.UDPAddr)) {
		buf := make([]byte, 70000)
		for {
			n, src, err := from.ReadFromUDP(buf)
			if err != nil {
				return
			}
			handle(buf[:n], src)
		}
	}
	go relay(requests, func(b []byte, src *net.UDPAddr) {
		mu.Lock()
		client, transfer = src, nil
		mu.Unlock()
		up.WriteToUDP(b, srv)
	})
	go relay(up, func(b []byte, src *net.UDPAddr) {
		mu.Lock()
		transfer = src
		to := client
		mu.Unlock()
		if !lose(b) {
			down.WriteToUDP(b, to)
		}
	})
	go relay(down, func(b []byte, _ *net.UDPAddr) {
		mu.Lock()
		to := transfer
		mu.Unlock()
		if to != nil && !lose(b) {
			up.WriteToUDP(b, to)
		}
	})
	return lp
}

// lostPackets returns how many DATA and ACK packets were lost.
func (lp *lossyProxy) lostPackets() (data, acks int) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.lost[3], lp.lost[4]
}
