//go:build cgo && linux

package agent_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"

	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/internal/testenv"
)

// TestBootInVM boots the static agent as /init of an initramfs in QEMU
// with a software TPM (swtpm) and an e1000 NIC, against a real daemon on
// the host: modules, DHCP, entropy, TPM, event log, approval, config,
// heartbeats, all as on a machine. It needs qemu-system-x86_64, swtpm and
// a Debian kernel (linux-image-amd64) with its e1000 module; it skips
// without them, and under -short.
func TestBootInVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM (about a minute under TCG)")
	}
	testenv.Integration(t, "agent as /init in a VM (e1000, swtpm)")
	qemu := testenv.LookPath(t, "qemu-system-x86_64", "qemu-system-x86")
	swtpm := testenv.LookPath(t, "swtpm", "swtpm")
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		testenv.Missing(t, "no kernel in /boot (Debian package linux-image-amd64)")
	}
	kernel := kernels[len(kernels)-1]
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	dir := t.TempDir()
	initrd := agentInitramfs(t, dir, release, "e1000")

	// The daemon, on a port the guest reaches as 10.0.2.2.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	d := startDaemon(t, daemontest.Options{}, map[string]any{
		"listen":     fmt.Sprintf("127.0.0.1:%d", port),
		"public_url": fmt.Sprintf("http://10.0.2.2:%d", port),
	})

	// The TPM.
	sock := startSWTPM(t, swtpm, dir)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 attestation.url=http://10.0.2.2:%d", port),
		"-netdev", "user,id=n0", "-device", "e1000,netdev=n0",
		"-chardev", "socket,id=chrtpm,path="+sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	console := &consoleLog{t: t, changed: make(chan struct{})}
	vm.Stdout, vm.Stderr = console, console
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Process.Kill()
		vm.Wait()
		console.stop()
	})

	for _, step := range []string{
		`msg="module loaded" module=e1000`, `msg="dhcp lease" link=eth0 address=10.0.2.15/24`,
		`msg="tpm opened" spec=/dev/tpmrm0`, `msg="ek read"`, `msg=registered`, `msg="credential activated"`,
	} {
		console.wait(t, step, 3*time.Minute)
	}
	quote := console.wait(t, `msg="quote sent"`, time.Minute)
	if strings.Contains(quote, "event_log_bytes=0") {
		t.Errorf("no event log sent from the VM (securityfs not mounted?): %s", quote)
	}
	waiting := console.wait(t, `msg="waiting for approval"`, time.Minute)
	id := regexp.MustCompile(`machine=([0-9a-f-]{36})`).FindStringSubmatch(waiting)
	if id == nil {
		t.Fatalf("no machine ID in %q", waiting)
	}
	approve(t, d, id[1], "vm-1")
	console.wait(t, `msg="config written" path=/run/attestation/config`, time.Minute)
	console.wait(t, `msg=heartbeat`, time.Minute)
	m := getMachine(t, d, id[1])
	if m.GetState() != "provisioned" || !m.GetTpmAvailable() || m.GetIp() != "10.0.2.15" || m.GetProduct() == "" {
		t.Errorf("machine %s: state %q tpm %v ip %q product %q; want provisioned, a TPM, 10.0.2.15 and the SMBIOS product",
			id[1], m.GetState(), m.GetTpmAvailable(), m.GetIp(), m.GetProduct())
	}
}

// buildAgent builds the static agent into dir, as make agent does, and
// returns it.
func buildAgent(t *testing.T, dir string) []byte {
	t.Helper()
	bin := filepath.Join(dir, "attestation-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/attestation-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// agentInitramfs builds the static agent into dir and, with the image
// builder (images/initramfs), an initramfs with it as /init and the named
// kernel modules of release with their dependencies; it returns the
// initramfs's path.
func agentInitramfs(t *testing.T, dir, release string, modules ...string) string {
	t.Helper()
	agentBin := buildAgent(t, dir)
	k, err := initramfs.OpenKernel(filepath.Join("/lib/modules", release))
	if err != nil {
		testenv.Missing(t, "%v (Debian package linux-image-amd64)", err)
	}
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, initramfs.Spec{Agent: agentBin, Kernel: k, Modules: modules}); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.cpio.gz")
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %d bytes (agent %d bytes, modules %v with their dependencies)", buf.Len(), len(agentBin), modules)
	return initrd
}

// startSWTPM starts a software TPM 2.0 for one QEMU boot and returns
// its control socket; it is killed when the test ends.
func startSWTPM(t *testing.T, swtpm, dir string) string {
	t.Helper()
	sock, _ := runSWTPM(t, swtpm, dir)
	return sock
}

// runSWTPM starts swtpm with its state in dir/tpm (kept: a second swtpm
// on the same dir is the same TPM, its EK included) and returns its
// control socket and a function that stops it (also run when the test
// ends).
func runSWTPM(t *testing.T, swtpm, dir string) (string, func()) {
	t.Helper()
	sock := filepath.Join(dir, "swtpm.sock")
	state := filepath.Join(dir, "tpm")
	os.Mkdir(state, 0o700)
	os.Remove(sock)
	tpmCmd := exec.Command(swtpm, "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+sock, "--flags", "startup-clear")
	if err := tpmCmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { tpmCmd.Process.Kill(); tpmCmd.Wait() }) }
	t.Cleanup(stop)
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("swtpm did not create its socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sock, stop
}

// consoleLog collects the VM's serial console.
type consoleLog struct {
	t *testing.T
	// prefix starts each line in the test log ("vm: " when empty).
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
	// lines are the complete lines so far, each with when it arrived.
	lines []consoleLine
	// from is where wait starts looking (mark).
	from    int
	partial []byte
	done    bool
	changed chan struct{}
}

// consoleLine is one line of a console and when the test read it: the
// host's clock, the same for the VM and the daemon (the guest's clock
// drifts under TCG).
type consoleLine struct {
	at   time.Time
	text string
	// end is the line's end in buf, for mark.
	end int
}

func (c *consoleLog) Write(p []byte) (int, error) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, consoleLine{at: now, text: strings.TrimRight(string(c.partial[:i]), "\r"), end: c.buf.Len() - len(c.partial) + i + 1})
		if !c.done {
			prefix := c.prefix
			if prefix == "" {
				prefix = "vm: "
			}
			c.t.Log(prefix + strings.TrimRight(string(c.partial[:i]), "\r"))
		}
		c.partial = c.partial[i+1:]
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

// mark makes later waits look only at what the console shows from now on.
func (c *consoleLog) mark() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.from = c.buf.Len()
}

// when returns when the first complete line containing s arrived (after
// the mark) and the line, or ok false when none has.
func (c *consoleLog) when(s string) (at time.Time, line string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if l.end > c.from && strings.Contains(l.text, s) {
			return l.at, l.text, true
		}
	}
	return time.Time{}, "", false
}

// after returns the first complete line, arriving after since (and after
// the mark), that re matches, with when it arrived and re's submatches.
func (c *consoleLog) after(since time.Time, re *regexp.Regexp) (at time.Time, m []string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if l.end <= c.from || l.at.Before(since) {
			continue
		}
		if m := re.FindStringSubmatch(l.text); m != nil {
			return l.at, m, true
		}
	}
	return time.Time{}, nil, false
}

// bytes is everything the console showed so far.
func (c *consoleLog) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func (c *consoleLog) stop() {
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

// wait returns the first complete console line containing s.
func (c *consoleLog) wait(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		// Complete lines only: the console arrives in pieces.
		b := c.buf.Bytes()[c.from:]
		sc := bufio.NewScanner(bytes.NewReader(b[:bytes.LastIndexByte(b, '\n')+1]))
		for sc.Scan() {
			if strings.Contains(sc.Text(), s) {
				c.mu.Unlock()
				return sc.Text()
			}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%snever showed %q within %s", cmp.Or(c.prefix, "vm: "), s, timeout)
		}
	}
}
