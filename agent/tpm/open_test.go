package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenMissingDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tpmrm0")
	_, err := Open(path)
	if !errors.Is(err, ErrNoTPM) {
		t.Fatalf("Open(%s) = %v, want ErrNoTPM", path, err)
	}
	if want := "no TPM at " + path; err.Error() != want {
		t.Errorf("Open(%s) error %q, want %q", path, err, want)
	}
}

func TestOpenNotADevice(t *testing.T) {
	path := t.TempDir()
	_, err := Open(path)
	if err == nil || errors.Is(err, ErrNoTPM) {
		t.Fatalf("Open(%s) = %v, want an error that is not ErrNoTPM", path, err)
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := Open("mssim://127.0.0.1:2321")
	if err == nil || !strings.Contains(err.Error(), "unknown scheme") {
		t.Fatalf("Open(mssim://...) = %v, want an unknown scheme error", err)
	}
}

// CheckSpec refuses what no machine can open; Open fails the same way.
func TestCheckSpec(t *testing.T) {
	for _, c := range []struct {
		name, spec string
		want       string // in the error; "" for none
	}{
		{"default device", "", ""},
		{"device path", "/nonexistent/tpm", ""},
		{"tcp", "tcp://127.0.0.1:2321", ""},
		{"tcp without a port", "tcp://127.0.0.1", "missing port"},
		{"unknown scheme", "mssim://127.0.0.1:2321", "unknown scheme"},
		{"simulator seed not a number", "simulator:abc", `TPM "simulator:abc"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckSpec(c.spec)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("CheckSpec(%q) = %v, want an error with %q (none if empty)", c.spec, err, c.want)
			}
			if _, oerr := Open(c.spec); c.want != "" && (oerr == nil || oerr.Error() != "open "+err.Error()) {
				t.Errorf("Open(%q) = %v, want the error of CheckSpec", c.spec, oerr)
			}
		})
	}
}

// Opening fails for good where no retry can help, and not where the TPM
// may yet appear or answer.
func TestPermanent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	for _, c := range []struct {
		name, spec string
		want       bool
	}{
		{"unknown scheme", "mssim://127.0.0.1:2321", true},
		{"tcp without a port", "tcp://127.0.0.1", true},
		{"a regular file", file, true},
		{"a directory", dir, true},
		{"below a regular file", filepath.Join(file, "tpm"), true},
		{"no device there", filepath.Join(dir, "tpmrm0"), false},
		{"nothing listening", "tcp://" + closed.Addr().String(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(c.spec)
			if err == nil {
				t.Fatalf("Open(%q) succeeded", c.spec)
			}
			if got := Permanent(err); got != c.want {
				t.Errorf("Permanent(%v) = %v, want %v", err, got, c.want)
			}
		})
	}
}

// TestTCPFraming serves one command over loopback and answers with a
// response split across several writes, as a stream may deliver it.
func TestTCPFraming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8} // GetRandom(8)
	rsp := []byte{0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		got := make([]byte, len(cmd))
		if _, err := io.ReadFull(c, got); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, cmd) {
			done <- errors.New("server got another command")
			return
		}
		for _, part := range [][]byte{rsp[:3], rsp[3:11], rsp[11:]} {
			c.Write(part)
			time.Sleep(10 * time.Millisecond)
		}
		done <- nil
	}()

	tr, err := Open("tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := tr.Send(cmd)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !bytes.Equal(got, rsp) {
		t.Errorf("Send = %x, want %x", got, rsp)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tr.Send(cmd); err == nil {
		t.Error("Send after Close succeeded")
	}
}

func TestTCPBadResponseSize(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.ReadFull(c, make([]byte, 10))
		hdr := make([]byte, 10)
		binary.BigEndian.PutUint32(hdr[2:], 1<<30)
		c.Write(hdr)
	}()
	tr, err := Open("tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Send(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "bad size") {
		t.Fatalf("Send = %v, want a bad size error", err)
	}
}

func TestReadEventLog(t *testing.T) {
	dir := t.TempDir()
	got, err := ReadEventLog(filepath.Join(dir, "absent"))
	if err != nil || got != nil {
		t.Fatalf("ReadEventLog(absent) = %x, %v, want nil, nil", got, err)
	}
	path := filepath.Join(dir, "binary_bios_measurements")
	want := []byte{0, 0, 0, 0, 3, 0, 0, 0}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = ReadEventLog(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadEventLog = %x, %v, want %x", got, err, want)
	}
}

// TestTCPRetry: a TPM that answers TPM_RC_RETRY gets the command again.
func TestTCPRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	retry := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22}
	ok := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0}
	served := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n := 0
		for _, rsp := range [][]byte{retry, retry, ok} {
			if _, err := io.ReadFull(c, make([]byte, len(cmd))); err != nil {
				break
			}
			n++
			c.Write(rsp)
		}
		served <- n
	}()
	tr, err := Open("tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	got, err := tr.Send(cmd)
	if err != nil || !bytes.Equal(got, ok) {
		t.Fatalf("Send = %x, %v; want %x", got, err, ok)
	}
	if n := <-served; n != 3 {
		t.Errorf("the TPM saw the command %d times, want 3", n)
	}
}
