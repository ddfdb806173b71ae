package tftp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// OptionError refuses a transfer whose request carried an option value
// the option's RFC does not allow. The peer is sent ERROR code 8 (RFC 2347:
// option negotiation failed) with the error's text.
type OptionError struct {
	Name, Value string
	// Reason says what the RFC allows.
	Reason string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("bad %s %q: %s", e.Name, e.Value, e.Reason)
}

// errorCode is the ERROR packet code that reports err to the peer.
func errorCode(err error) uint16 {
	if _, ok := err.(*OptionError); ok {
		return 8
	}
	return 1
}

// readFromWindow sends r in windows of s.window blocks (RFC 7440): a
// window is sent, then the sender waits for an ACK. An ACK of the window's
// last block slides the window past it. An ACK of an earlier block, a
// duplicate ACK of the block before the window, or no ACK within the
// timeout means blocks were lost: the window is sent again from the block
// after the last one acknowledged. A duplicate ACK triggers that only once
// for a window, since a receiver may answer every block it gets out of
// order with one.
func (s *sender) readFromWindow(r io.Reader) (n int64, err error) {
	w := s.window
	// The window: block s.block+i is blocks[(head+i)%w][:lens[...]], the
	// first filled of them read and not yet acknowledged.
	blocks := make([][]byte, w)
	lens := make([]int, w)
	for i := range blocks {
		blocks[i] = make([]byte, len(s.send))
		binary.BigEndian.PutUint16(blocks[i][0:2], opDATA)
	}
	head, filled := 0, 0
	last := false // the final block, shorter than blksize, is read
	s.block = 1
	for {
		for ; filled < w && !last; filled++ {
			k := (head + filled) % w
			l, err := io.ReadFull(r, blocks[k][4:])
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				s.abort(err)
				return n, err
			}
			n += int64(l)
			binary.BigEndian.PutUint16(blocks[k][2:4], s.block+uint16(filled))
			lens[k] = 4 + l
			last = l < len(blocks[k])-4
		}
		acked, err := s.sendWindowWithRetry(blocks, lens, head, filled)
		if err != nil {
			s.abort(err)
			return n, err
		}
		s.block += uint16(acked)
		head = (head + acked) % w
		filled -= acked
		if last && filled == 0 {
			if s.hook != nil {
				s.hook.OnSuccess(s.buildTransferStats())
			}
			return n, nil
		}
	}
}

// sendWindowWithRetry sends the filled blocks from head and returns how
// many of them the peer acknowledged, sending them again from the first
// unacknowledged one as readFromWindow says.
func (s *sender) sendWindowWithRetry(blocks [][]byte, lens []int, head, filled int) (int, error) {
	s.retry.reset()
	resent := false // a duplicate ACK has sent the window again
	for {
		if err := s.sendWindow(blocks, lens, head, filled); err != nil {
			return 0, err
		}
		if err := s.conn.setDeadline(s.timeout); err != nil {
			return 0, err
		}
		for {
			acked, err := s.waitWindowACK(filled)
			if err != nil {
				if _, ok := err.(net.Error); ok && s.retry.count() < s.retries {
					s.retry.backoff()
					break
				}
				return 0, err
			}
			if acked > 0 {
				s.datagramsAcked += acked
				return acked, nil
			}
			if !resent {
				resent = true
				break
			}
			// A duplicate ACK again: the window was sent again already.
		}
	}
}

// sendWindow sends the filled blocks from head: with one call when the
// transfer's socket is a BatchWriter, else one by one.
func (s *sender) sendWindow(blocks [][]byte, lens []int, head, filled int) error {
	if pc, ok := s.conn.(*packetConnection); ok {
		if bw, ok := pc.conn.(BatchWriter); ok {
			datagrams := make([][]byte, filled)
			for i := range datagrams {
				k := (head + i) % len(blocks)
				datagrams[i] = blocks[k][:lens[k]]
			}
			if err := bw.WriteBatchTo(datagrams, s.addr); err != nil {
				return err
			}
			s.datagramsSent += filled
			return nil
		}
	}
	for i := 0; i < filled; i++ {
		k := (head + i) % len(blocks)
		if err := s.conn.sendTo(blocks[k][:lens[k]], s.addr); err != nil {
			return err
		}
		s.datagramsSent++
	}
	return nil
}

// waitWindowACK waits for an ACK from the peer of one of the filled
// blocks from s.block and returns how many blocks it acknowledges, 0 for
// a duplicate ACK of the block before s.block. ACKs of other blocks are
// ignored.
func (s *sender) waitWindowACK(filled int) (int, error) {
	for {
		n, addr, err := s.conn.readFrom(s.receive)
		if err != nil {
			return 0, err
		}
		if !addr.IP.Equal(s.addr.IP) || (s.tid != 0 && addr.Port != s.tid) {
			continue
		}
		p, err := parsePacket(s.receive[:n])
		if err != nil {
			continue
		}
		switch p := p.(type) {
		case pACK:
			if d := int(p.block() - (s.block - 1)); d <= filled {
				return d, nil
			}
		case pERROR:
			return 0, fmt.Errorf("sending block %d: code=%d, error: %s",
				s.block, p.code(), p.message())
		}
	}
}
