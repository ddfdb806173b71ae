package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the kernel's TPM resource manager: it lets several
// processes use the TPM and flushes what a crashed process left loaded.
const DefaultDevice = "/dev/tpmrm0"

// ErrNoTPM reports that the machine has no TPM where one was asked for.
var ErrNoTPM = errors.New("no TPM")

// Open connects to a TPM. spec is one of:
//
//   - a device path such as /dev/tpmrm0 (the default when spec is empty);
//   - tcp://HOST:PORT, the command socket of a TPM that speaks the raw TPM 2.0
//     command protocol over TCP, such as `swtpm socket --server type=tcp`;
//   - "simulator" or "simulator:SEED", the in-process reference simulator
//     (cgo builds only). There is one simulator per process: a second Open
//     while the first is not closed fails. Every Open manufactures a fresh
//     TPM; with a SEED its primary seeds are derived from SEED, so the same
//     SEED gives the same EK and AK on every Open, like one machine
//     rebooting. Never use a simulator outside tests.
//
// A spec that CheckSpec refuses fails with its error.
func Open(spec string) (transport.TPMCloser, error) {
	if err := CheckSpec(spec); err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	switch kind, arg := splitSpec(spec); kind {
	case simulatorSpec:
		return openSimulator(arg)
	case tcpSpec:
		return openTCP(arg)
	default:
		return openDevice(arg)
	}
}

// CheckSpec reports what makes spec unusable on any machine, without
// opening anything: an unknown scheme, a tcp:// address that is not
// HOST:PORT, a simulator seed that is not a number, or the simulator in a
// binary built without it.
func CheckSpec(spec string) error {
	var err error
	switch kind, arg := splitSpec(spec); kind {
	case simulatorSpec:
		err = checkSimulator(arg)
	case tcpSpec:
		_, _, err = net.SplitHostPort(arg)
	case unknownSpec:
		err = errors.New("unknown scheme (want a device path, tcp://HOST:PORT or simulator)")
	}
	if err != nil {
		return &specError{spec: spec, err: err}
	}
	return nil
}

// specError is CheckSpec's error.
type specError struct {
	spec string
	err  error
}

func (e *specError) Error() string { return fmt.Sprintf("TPM %q: %v", e.spec, e.err) }
func (e *specError) Unwrap() error { return e.err }

// Permanent reports whether err, from Open, is one that trying again
// cannot fix: a spec CheckSpec refuses, a path that is not a device, or a
// device this process may not open. A missing device (ErrNoTPM) is not:
// its driver may still be probing.
func Permanent(err error) bool {
	var se *specError
	return errors.As(err, &se) || errors.Is(err, linuxtpm.ErrFileIsNotDevice) ||
		errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOTDIR)
}

// The kinds of TPM spec.
const (
	deviceSpec = iota
	tcpSpec
	simulatorSpec
	unknownSpec
)

// splitSpec returns the kind of spec and what follows its scheme (the
// device's path for a device).
func splitSpec(spec string) (kind int, arg string) {
	switch {
	case spec == "":
		return deviceSpec, DefaultDevice
	case spec == "simulator" || strings.HasPrefix(spec, "simulator:"):
		return simulatorSpec, strings.TrimPrefix(strings.TrimPrefix(spec, "simulator"), ":")
	case strings.HasPrefix(spec, "tcp://"):
		return tcpSpec, strings.TrimPrefix(spec, "tcp://")
	case strings.Contains(spec, "://"):
		return unknownSpec, spec
	default:
		return deviceSpec, spec
	}
}

func openDevice(path string) (transport.TPMCloser, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s", ErrNoTPM, path)
		}
		return nil, fmt.Errorf("open TPM %s: %w", path, err)
	}
	// linuxtpm polls the descriptor before each read; a plain non-blocking
	// read of the device can return 0 bytes before the response is ready.
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w", path, err)
	}
	return &onceCloser{TPMCloser: t}, nil
}

// onceCloser makes Close safe to call more than once.
type onceCloser struct {
	transport.TPMCloser
	once sync.Once
	err  error
}

func (c *onceCloser) Close() error {
	c.once.Do(func() { c.err = c.TPMCloser.Close() })
	return c.err
}

const (
	// tcpTimeout bounds one command: creating an RSA primary key on a
	// software TPM can take several seconds.
	tcpTimeout = 2 * time.Minute
	// maxResponse is far above any TPM's maximum response size.
	maxResponse = 64 << 10
	headerSize  = 10 // tag (2), size (4), response code (4)
)

// tcpTPM sends raw TPM commands over a stream: each command is written as
// is, and the response is its 10-byte header followed by size-10 bytes.
type tcpTPM struct {
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func openTCP(addr string) (transport.TPMCloser, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("open TPM tcp://%s: %w", addr, err)
	}
	return &tcpTPM{conn: conn}, nil
}

// rcRetry is TPM_RC_RETRY: the TPM could not start the command and it
// must be sent again.
const rcRetry = 0x922

func (t *tcpTPM) Send(cmd []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("TPM connection is closed")
	}
	// Like the device transport: resend on TPM_RC_RETRY, backing off from
	// 1 ms to 1 s.
	for wait := time.Millisecond; ; wait *= 2 {
		rsp, err := t.roundTrip(cmd)
		if err != nil || binary.BigEndian.Uint32(rsp[6:10]) != rcRetry || wait > time.Second {
			return rsp, err
		}
		time.Sleep(wait)
	}
}

func (t *tcpTPM) roundTrip(cmd []byte) ([]byte, error) {
	if err := t.conn.SetDeadline(time.Now().Add(tcpTimeout)); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	if _, err := t.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	rsp := make([]byte, headerSize)
	if _, err := io.ReadFull(t.conn, rsp); err != nil {
		return nil, fmt.Errorf("read TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(rsp[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("read TPM response: bad size %d", size)
	}
	rsp = append(rsp, make([]byte, size-headerSize)...)
	if _, err := io.ReadFull(t.conn, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read TPM response: %w", err)
	}
	return rsp, nil
}

func (t *tcpTPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return t.conn.Close()
}
