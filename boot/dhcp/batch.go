package dhcp

import (
	"errors"
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

// writeBatch is how many datagrams one system call sends at most
// (sendmmsg on Linux).
const writeBatch = readBatch

// batchWriter sends several datagrams per system call.
type batchWriter struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	bufs [][]byte
}

func newBatchWriter(c net.PacketConn, n int) *batchWriter {
	w := &batchWriter{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, n), bufs: make([][]byte, n)}
	for i := range w.msgs {
		w.msgs[i].Buffers = w.bufs[i : i+1]
	}
	return w
}

// datagramOut is one datagram to send.
type datagramOut struct {
	data []byte
	dst  *net.UDPAddr
}

// write sends out in order and returns each datagram's error (nil:
// sent), appended to errs[:0]: one that fails does not keep the others
// from going.
func (w *batchWriter) write(out []datagramOut, errs []error) []error {
	errs = errs[:0]
	for len(out) > 0 {
		n := min(len(out), len(w.msgs))
		for i, d := range out[:n] {
			w.bufs[i] = d.data
			w.msgs[i].Addr = d.dst
		}
		sent, err := w.pc.WriteBatch(w.msgs[:n], 0)
		sent = max(0, min(sent, n)) // -1 on a failed system call
		for range sent {
			errs = append(errs, nil)
		}
		if sent == 0 {
			// The first datagram failed (sendmmsg reports a failure
			// only when it sent none): skip it, send the rest.
			if err == nil {
				err = errors.New("sent nothing")
			}
			errs = append(errs, err)
			sent = 1
		}
		out = out[sent:]
	}
	for i := range w.msgs {
		w.bufs[i], w.msgs[i].Addr = nil, nil
	}
	return errs
}
