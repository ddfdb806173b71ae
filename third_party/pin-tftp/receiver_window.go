package tftp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// writeToWindow receives a transfer in windows of r.window blocks (RFC
// 7440): blocks are taken in order and the last of every window is
// acknowledged, as is the final block. A block from further on than the
// next one means some were lost: the last block received in order is
// acknowledged at once, so the sender starts again after it (once, until
// the next block arrives in order); so it is when no block arrives within
// the timeout. Blocks already received are ignored.
func (r *receiver) writeToWindow(w io.Writer) (n int64, err error) {
	binary.BigEndian.PutUint16(r.send[0:2], opACK)
	// r.block is the last block received in order; got counts those
	// received since the last ACK.
	got := 0
	hinted := false
	r.retry.reset()
	if err := r.sendACK(); err != nil {
		r.abort(err)
		return n, err
	}
	for {
		if err := r.conn.setDeadline(r.timeout); err != nil {
			r.abort(err)
			return n, err
		}
		c, addr, err := r.conn.readFrom(r.receive)
		if err != nil {
			if _, ok := err.(net.Error); ok && r.retry.count() < r.retries {
				r.retry.backoff()
				got = 0
				err = r.sendACK()
			}
			if err != nil {
				r.abort(err)
				return n, err
			}
			continue
		}
		if !addr.IP.Equal(r.addr.IP) || (r.tid != 0 && addr.Port != r.tid) {
			continue
		}
		p, err := parsePacket(r.receive[:c])
		if err != nil {
			continue
		}
		switch p := p.(type) {
		case pDATA:
			if d := int(p.block() - r.block); d != 1 {
				if d > 1 && d <= r.window && !hinted {
					hinted = true
					got = 0
					if err := r.sendACK(); err != nil {
						r.abort(err)
						return n, err
					}
				}
				continue
			}
			r.block++
			r.datagramsAcked++
			r.retry.reset()
			hinted = false
			l, err := w.Write(r.receive[4:c])
			n += int64(l)
			if err != nil {
				r.abort(err)
				return n, err
			}
			if c < len(r.receive) {
				if r.autoTerm {
					r.terminate()
				}
				return n, nil
			}
			if got++; got == r.window {
				got = 0
				if err := r.sendACK(); err != nil {
					r.abort(err)
					return n, err
				}
			}
		case pERROR:
			err := fmt.Errorf("code: %d, message: %s", p.code(), p.message())
			r.abort(err)
			return n, err
		}
	}
}

// sendACK acknowledges r.block.
func (r *receiver) sendACK() error {
	binary.BigEndian.PutUint16(r.send[2:4], r.block)
	r.datagramsSent++
	return r.conn.sendTo(r.send[:4], r.addr)
}
