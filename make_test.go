package attestation_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeDebian is a PATH holding only bash, env, a fake id (root or not), a
// fake sudo and a fake apt-get that record how they were called, and an
// empty DEPS_ROOT: to the deps recipes, a Debian machine with nothing
// installed.
type fakeDebian struct {
	t    *testing.T
	bin  string
	root string
	log  string
}

func newFakeDebian(t *testing.T, uid string, failing ...string) *fakeDebian {
	t.Helper()
	dir := t.TempDir()
	f := &fakeDebian{t: t, bin: filepath.Join(dir, "bin"), root: filepath.Join(dir, "root"), log: filepath.Join(dir, "calls")}
	for _, d := range []string{f.bin, f.root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"bash", "env"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("no %s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(f.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	f.script("id", `[ "$1" = -u ] && echo `+uid)
	f.script("sudo", `echo "sudo $*" >>`+f.log+`; exec "$@"`)
	// apt-get fails for any install naming one of the failing packages.
	fail := ""
	for _, p := range failing {
		fail += `case " $* " in *" ` + p + ` "*) exit 100;; esac; `
	}
	f.script("apt-get", `echo "apt-get DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-unset} $*" >>`+f.log+`; `+fail+`exit 0`)
	return f
}

func (f *fakeDebian) script(name, body string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.bin, name), []byte("#!/bin/bash\n"+body+"\n"), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

// make runs the target of the repository's Makefile on the fake machine
// and returns its output, whether it succeeded, and the recorded calls.
func (f *fakeDebian) make(target string) (out string, ok bool, calls []string) {
	f.t.Helper()
	mk, err := exec.LookPath("make")
	if err != nil {
		f.t.Fatalf("no make: %v", err)
	}
	cmd := exec.Command(mk, "--no-print-directory", target)
	cmd.Env = []string{"PATH=" + f.bin, "DEPS_ROOT=" + f.root, "HOME=" + f.root}
	b, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(f.log)
	if s := strings.TrimSpace(string(log)); s != "" {
		calls = strings.Split(s, "\n")
	}
	return string(b), err == nil, calls
}

// TestMakeDeps runs `make deps` and `make test-deps` as root and as
// another user on a machine with nothing installed, and checks what
// apt-get was called with: as root directly, otherwise through sudo, and
// always with DEBIAN_FRONTEND=noninteractive (after an expansion such as
// an empty $sudo, VAR=value is run as a command, which once made every
// install fail on a fresh root machine).
func TestMakeDeps(t *testing.T) {
	const build = "gcc libc6-dev libssl-dev"
	const install = "install -y -qq --no-install-recommends "
	tests := []struct {
		name    string
		uid     string
		target  string
		failing []string
		wantOK  bool
		want    []string
		wantOut string
	}{
		{
			name: "deps as root", uid: "0", target: "deps", wantOK: true,
			want: []string{
				"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + build,
			},
			wantOut: "installing Debian packages for build: " + build,
		},
		{
			name: "deps as a user", uid: "1000", target: "deps", wantOK: true,
			want: []string{
				"sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
				"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
				"sudo env DEBIAN_FRONTEND=noninteractive apt-get " + install + build,
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + build,
			},
		},
		{
			name: "deps that cannot be installed", uid: "0", target: "deps", failing: []string{"libssl-dev"}, wantOK: false,
			want: []string{
				"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + build,
			},
			wantOut: "could not install gcc libc6-dev libssl-dev: cgo",
		},
		{
			name: "test-deps with one package missing from the archive", uid: "0", target: "test-deps", failing: []string{"atftp"}, wantOK: true,
			want: []string{
				"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + build,
				"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "swtpm swtpm-tools qemu-system-x86 ipxe-qemu linux-image-amd64 ipxe ovmf iproute2 curl isc-dhcp-client busybox kea-admin tftp-hpa atftp xorriso systemd postgresql",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "swtpm",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "swtpm-tools",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "qemu-system-x86",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "ipxe-qemu",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "linux-image-amd64",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "ipxe",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "ovmf",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "iproute2",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "curl",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "isc-dhcp-client",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "busybox",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "kea-admin",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "tftp-hpa",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "atftp",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "xorriso",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "systemd",
				"apt-get DEBIAN_FRONTEND=noninteractive " + install + "postgresql",
			},
			wantOut: "could not install atftp: the tests that need them skip (and fail under CI=true)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDebian(t, tt.uid, tt.failing...)
			out, ok, calls := f.make(tt.target)
			if ok != tt.wantOK {
				t.Errorf("make %s succeeded: %v, want %v\n%s", tt.target, ok, tt.wantOK, out)
			}
			if strings.Join(calls, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("make %s called:\n  %s\nwant:\n  %s\noutput:\n%s", tt.target, strings.Join(calls, "\n  "), strings.Join(tt.want, "\n  "), out)
			}
			if strings.Contains(out, "command not found") {
				t.Errorf("make %s printed %q", tt.target, out)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("make %s printed:\n%s\nwant it to contain %q", tt.target, out, tt.wantOut)
			}
		})
	}
}

// TestMakeDepsNothingMissing: with everything present, no apt-get at all.
func TestMakeDepsNothingMissing(t *testing.T) {
	f := newFakeDebian(t, "0")
	f.script("gcc", "exit 0")
	for _, p := range []string{"usr/include/stdio.h", "usr/include/openssl/evp.h"} {
		p = filepath.Join(f.root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, ok, calls := f.make("deps")
	if !ok || len(calls) != 0 || out != "" {
		t.Errorf("make deps with nothing missing: ok %v, calls %q, output %q; want ok, no calls, no output", ok, calls, out)
	}
}

// TestDocLinks: every relative link in the README points at a file of the
// repository (a clone has nothing outside it).
func TestDocLinks(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#]+)(#[^)]*)?\)`).FindAllStringSubmatch(string(b), -1) {
		link := m[1]
		if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
			continue
		}
		if strings.HasPrefix(link, "../") {
			t.Errorf("README links outside the repository: %s", link)
			continue
		}
		if _, err := os.Stat(link); err != nil {
			t.Errorf("README links to %s: %v", link, err)
		}
	}
}
