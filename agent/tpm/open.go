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
func Open(spec string) (transport.TPMCloser, error) {
	switch {
	case spec == "":
		return openDevice(DefaultDevice)
	case spec == "simulator" || strings.HasPrefix(spec, "simulator:"):
		return openSimulator(strings.TrimPrefix(strings.TrimPrefix(spec, "simulator"), ":"))
	case strings.HasPrefix(spec, "tcp://"):
		return openTCP(strings.TrimPrefix(spec, "tcp://"))
	case strings.Contains(spec, "://"):
		return nil, fmt.Errorf("open TPM %q: unknown scheme (want a device path, tcp://HOST:PORT or simulator)", spec)
	default:
		return openDevice(spec)
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
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("open TPM tcp://%s: %w", addr, err)
	}
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
