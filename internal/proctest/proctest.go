// Package proctest runs a built attestationd as a process, for the tests
// of what builds and ships it (custom builds, the .deb, the image): on a
// free loopback port, until it answers /healthz, stopped with SIGTERM when
// the test ends, its output shown when the test failed.
package proctest

import (
	"bytes"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address no one listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start starts cmd, an attestationd told (by flag or environment) to
// listen on addr, and waits up to a minute for http://addr/healthz to
// answer 200; it fails the test if the daemon exits first. It returns
// the daemon's URL, http://addr.
func Start(t testing.TB, cmd *exec.Cmd, addr string) string {
	t.Helper()
	url, _ := StartOutput(t, cmd, addr)
	return url
}

// StartOutput is Start that also returns a function reading what the
// daemon has written so far (stdout and stderr), for tests of its logs.
func StartOutput(t testing.TB, cmd *exec.Cmd, addr string) (string, func() string) {
	t.Helper()
	url := "http://" + addr
	// One writer for both streams, read while the process writes it.
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("attestationd did not stop within 15s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("attestationd's output:\n%s", out.String())
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("attestationd exited before answering /healthz: %v\n%s", err, out.String())
		default:
		}
		resp, err := client.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, out.String
			}
		}
	}
	t.Fatalf("attestationd did not answer %s/healthz within a minute", url)
	return "", nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
