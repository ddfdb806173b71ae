package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestBatchReader(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	const n = 3*readBatch + 5 // more than one batch
	var want [][]byte
	for i := range n {
		p := []byte(fmt.Sprintf("datagram %d %s", i, bytes.Repeat([]byte("x"), i*7)))
		want = append(want, p)
		if _, err := cli.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	long := bytes.Repeat([]byte{0xab}, maxDatagram+100)
	if _, err := cli.Write(long); err != nil {
		t.Fatal(err)
	}
	want = append(want, long[:maxDatagram])

	br := newBatchReader(srv, readBatch)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	var in []datagramIn
	batches := 0
	for len(got) < len(want) {
		in, err = br.read(in)
		if err != nil {
			t.Fatalf("read after %d datagrams: %v", len(got), err)
		}
		if len(in) == 0 || len(in) > readBatch {
			t.Fatalf("batch of %d datagrams, want 1..%d", len(in), readBatch)
		}
		batches++
		for _, d := range in {
			if d.src == nil || !d.src.IP.Equal(cli.LocalAddr().(*net.UDPAddr).IP) || d.src.Port != cli.LocalAddr().(*net.UDPAddr).Port {
				t.Fatalf("source %v, want %v", d.src, cli.LocalAddr())
			}
			// The buffers are reused: keep a copy.
			got = append(got, bytes.Clone(d.data))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("datagram %d: got %d bytes %.20q, want %d bytes %.20q", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
	if batches >= len(want) {
		t.Logf("no batching: %d reads for %d datagrams (not Linux?)", batches, len(want))
	}
}

func TestBatchWriter(t *testing.T) {
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	to := dst.LocalAddr().(*net.UDPAddr)
	// A datagram larger than UDP allows fails (EMSGSIZE): those are
	// reported, the ones after them still go.
	huge := make([]byte, 70000)
	var out []datagramOut
	var wantFail []bool
	for i := range 2*writeBatch + 3 {
		d := datagramOut{data: []byte(fmt.Sprintf("reply %d", i)), dst: to}
		fail := i == 0 || i == 5 || i == writeBatch
		if fail {
			d.data = huge
		}
		out = append(out, d)
		wantFail = append(wantFail, fail)
	}
	bw := newBatchWriter(src, writeBatch)
	errs := bw.write(out, nil)
	if len(errs) != len(out) {
		t.Fatalf("got %d results for %d datagrams", len(errs), len(out))
	}
	var want []string
	for i, err := range errs {
		if (err != nil) != wantFail[i] {
			t.Errorf("datagram %d: got error %v, want one: %v", i, err, wantFail[i])
		}
		if !wantFail[i] {
			want = append(want, string(out[i].data))
		}
	}
	dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, w := range want {
		n, err := dst.Read(buf)
		if err != nil {
			t.Fatalf("read, waiting for %q: %v", w, err)
		}
		if got := string(buf[:n]); got != w {
			t.Fatalf("got %q, want %q (in order)", got, w)
		}
	}
}
