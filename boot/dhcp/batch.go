package dhcp

import (
	"net"

	"golang.org/x/net/ipv4"
)

// maxDatagram is the largest datagram read whole: an Ethernet frame's
// payload. A longer one is truncated, and then fails to parse.
const maxDatagram = 1500

// readBatch is how many datagrams one system call reads at most
// (recvmmsg on Linux, one at a time elsewhere).
const readBatch = 32

// batchReader reads several datagrams per system call into buffers it
// reuses: what read returns is valid until the next read.
type batchReader struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
}

func newBatchReader(c net.PacketConn, n int) *batchReader {
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, maxDatagram)}
	}
	return &batchReader{pc: ipv4.NewPacketConn(c), msgs: msgs}
}

// datagramIn is one datagram read: its bytes and sender.
type datagramIn struct {
	data []byte
	src  *net.UDPAddr
}

// read blocks until at least one datagram is there and returns the
// ones read, appended to out[:0].
func (r *batchReader) read(out []datagramIn) ([]datagramIn, error) {
	n, err := r.pc.ReadBatch(r.msgs, 0)
	if err != nil {
		return out[:0], err
	}
	out = out[:0]
	for i := range r.msgs[:n] {
		m := &r.msgs[i]
		src, _ := m.Addr.(*net.UDPAddr)
		out = append(out, datagramIn{data: m.Buffers[0][:m.N], src: src})
		m.Addr = nil
	}
	return out, nil
}
