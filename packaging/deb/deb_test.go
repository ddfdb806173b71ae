package deb_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/attestation/attestation/internal/proctest"
	"github.com/attestation/attestation/internal/testenv"
)

// TestVersion: the Debian versions of git describe's, in dpkg's order.
func TestVersion(t *testing.T) {
	for _, tt := range []struct{ version, want string }{
		{"v1.2.0", "1.2.0"},
		{"v1.2.0-rc.1", "1.2.0~rc.1"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3.gabc1234+dirty"},
		{"abc1234", "0.0.0+gabc1234"},
		{"2e8084d-dirty", "0.0.0+g2e8084d+dirty"},
		{"", "0.0.0"},
	} {
		t.Run(tt.version, func(t *testing.T) {
			out, err := exec.Command("sh", "version.sh", tt.version).CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
				t.Errorf("version.sh %q = %q (%v), want %q", tt.version, got, err, tt.want)
			}
		})
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		return
	}
	// rc.1 < release < commits after it < the same, modified.
	order := []string{"0.0.0+gabc1234", "1.2.0~rc.1", "1.2.0", "1.2.0+3.gabc1234", "1.2.0+3.gabc1234+dirty", "1.2.0+10.gabc1234"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", order[i-1], order[i])
		}
	}
}

// The test's build: make deb with this version into a temporary BIN and
// DIST.
const (
	version    = "v1.2.3-4-gabcdef0"
	debVersion = "1.2.3+4.gabcdef0"
)

// TestDeb runs make deb, checks both packages' fields, files and scripts,
// installs each into a fresh root with dpkg (the maintainer scripts run
// with DPKG_ROOT, as for a chroot not yet booted), has systemd-analyze
// verify the unit there, with and without the network boot drop-in, and
// starts the daemon from the installed tree as the unit would: its
// ExecStart, a user that is not root, the state directory. Then the CLI
// package gives way to the full one, which is purged.
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the packages and installs them")
	}
	testenv.Integration(t, "make deb: both packages installed with dpkg --root, the unit verified, the daemon started from them")
	for _, tool := range []struct{ name, pkg string }{
		{"make", "make"}, {"dpkg", "dpkg"}, {"dpkg-deb", "dpkg"},
		{"systemd-analyze", "systemd"}, {"deb-systemd-helper", "init-system-helpers"},
	} {
		testenv.LookPath(t, tool.name, tool.pkg)
	}
	testenv.Root(t, "starting the daemon chrooted into the installed tree")
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	run(t, "../..", "make", "--no-print-directory", "deb", "BIN="+filepath.Join(tmp, "bin"), "DIST="+dist, "VERSION="+version)
	full := filepath.Join(dist, "attestation_"+debVersion+"_amd64.deb")
	cli := filepath.Join(dist, "attestation-cli_"+debVersion+"_amd64.deb")

	t.Run("fields", func(t *testing.T) {
		for _, c := range []struct{ deb, field, want string }{
			{full, "Package", "attestation"},
			{full, "Version", debVersion},
			{full, "Depends", "ipxe, apt, kmod"},
			{full, "Provides", "attestation-cli"},
			{full, "Conflicts", "attestation-cli"},
			{full, "Replaces", "attestation-cli"},
			{cli, "Package", "attestation-cli"},
			{cli, "Depends", ""},
		} {
			if got := strings.TrimSpace(run(t, "", "dpkg-deb", "--field", c.deb, c.field)); got != c.want {
				t.Errorf("%s %s: %q, want %q", filepath.Base(c.deb), c.field, got, c.want)
			}
		}
	})
	t.Run("files", func(t *testing.T) {
		for _, c := range []struct {
			deb  string
			want []string
		}{
			{full, []string{
				"/etc/attestation/attestationd.yaml",
				"/usr/bin/attestation",
				"/usr/bin/attestationd",
				"/usr/lib/attestation/attestation-agent",
				"/usr/lib/systemd/system/attestationd.service",
				"/usr/share/attestation/pxe.conf",
				"/usr/share/doc/attestation/README.md",
			}},
			{cli, []string{"/usr/bin/attestation"}},
		} {
			if got := files(t, c.deb); !slices.Equal(got, c.want) {
				t.Errorf("%s holds %q, want %q", filepath.Base(c.deb), got, c.want)
			}
		}
		control := filepath.Join(tmp, "control")
		run(t, "", "dpkg-deb", "--control", full, control)
		if b, _ := os.ReadFile(filepath.Join(control, "conffiles")); string(b) != "/etc/attestation/attestationd.yaml\n" {
			t.Errorf("conffiles %q, want the settings file alone", b)
		}
		for _, script := range []string{"postinst", "prerm", "postrm"} {
			run(t, "", "sh", "-n", filepath.Join(control, script))
		}
	})

	root := newRoot(t)
	dpkg(t, root, "--install", full)
	unit := "/usr/lib/systemd/system/attestationd.service"
	if got, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/attestationd.service")); err != nil || got != unit {
		t.Errorf("postinst did not enable attestationd.service in the root: %q, %v", got, err)
	}
	if status := run(t, "", "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "--showformat=${Status}", "--show", "attestation"); status != "install ok installed" {
		t.Errorf("attestation's status %q, want installed", status)
	}

	t.Run("unit", func(t *testing.T) {
		// A base system's units (sysinit.target and the rest) beside the
		// package's, which systemd-analyze resolves the unit against.
		run(t, "", "cp", "-rn", "/usr/lib/systemd/system/.", filepath.Join(root, "usr/lib/systemd/system"))
		// verify has systemd-analyze check the unit and rate its
		// exposure, and returns the rating's lines.
		verify := func(what string) string {
			t.Helper()
			// It warns of bad lines on stderr and still succeeds: any
			// output is a failure.
			if out := run(t, "", "systemd-analyze", "verify", "--root="+root, "attestationd.service"); out != "" {
				t.Errorf("systemd-analyze verify %s:\n%s", what, out)
			}
			// Overall exposure at most 2.5 of 10 (--threshold is x10).
			out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--threshold=25", "--root="+root, "attestationd.service").CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			t.Logf("%s: %s", what, lines[len(lines)-1])
			if err != nil {
				t.Errorf("systemd-analyze security %s: %v\n%s", what, err, out)
			}
			return string(out)
		}
		const netCaps = "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)"
		if out := verify("the unit"); !strings.Contains(out, "✓ "+netCaps) {
			t.Errorf("without the network boot drop-in the daemon has network capabilities:\n%s", out)
		}
		b, err := os.ReadFile(filepath.Join(root, unit))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{"DynamicUser=yes", "StateDirectory=attestation", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n"} {
			if !strings.Contains(string(b), line) {
				t.Errorf("the unit lacks %q", line)
			}
		}
		// The network boot drop-in, turned on as its comment says, but by
		// a relative link: systemd-analyze --root does not follow an
		// absolute one inside the root.
		dropins := filepath.Join(root, "etc/systemd/system/attestationd.service.d")
		if err := os.MkdirAll(dropins, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../../../usr/share/attestation/pxe.conf", filepath.Join(dropins, "pxe.conf")); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dropins)
		if out := verify("with pxe.conf"); !strings.Contains(out, "✗ "+netCaps) {
			t.Errorf("with the network boot drop-in the daemon has no network capabilities:\n%s", out)
		}
		b, _ = os.ReadFile(filepath.Join(root, "usr/share/attestation/pxe.conf"))
		if !strings.Contains(string(b), "\nAmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n") {
			t.Errorf("pxe.conf does not grant CAP_NET_BIND_SERVICE and CAP_NET_RAW:\n%s", b)
		}
	})

	t.Run("daemon", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, unit))
		if err != nil {
			t.Fatal(err)
		}
		var execStart []string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				execStart = strings.Fields(v)
			}
		}
		if len(execStart) == 0 {
			t.Fatal("the unit has no ExecStart")
		}
		// What DynamicUser and StateDirectory make: a user of its own and
		// its directory. The listener moves to a free loopback port, as a
		// drop-in's Environment= would.
		const uid = 61934
		state := filepath.Join(root, "var/lib/attestation")
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(state, uid, uid); err != nil {
			t.Fatal(err)
		}
		addr := proctest.FreeAddr(t)
		cmd := exec.Command(execStart[0], execStart[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = "/var/lib/attestation"
		cmd.Env = []string{"ATTESTATION_LISTEN=" + addr}
		url := proctest.Start(t, cmd, addr)
		token, err := os.ReadFile(filepath.Join(state, "admin-token"))
		if err != nil {
			t.Fatalf("the daemon wrote no admin token into its state directory: %v", err)
		}
		out := chroot(t, root, []string{"ATTESTATION_API_URL=" + url, "ATTESTATION_TOKEN=" + strings.TrimSpace(string(token))}, "/usr/bin/attestation", "extensions", "list")
		if !strings.Contains(out, "tags") || !strings.Contains(out, "webhook") {
			t.Errorf("attestation extensions list from the package:\n%s", out)
		}
		for _, bin := range []string{"/usr/bin/attestationd", "/usr/bin/attestation", "/usr/lib/attestation/attestation-agent"} {
			if out := chroot(t, root, nil, bin, "--version"); !strings.HasPrefix(out, filepath.Base(bin)+" "+version+"\n") {
				t.Errorf("%s --version:\n%s\nwant version %s", bin, out, version)
			}
		}
	})

	t.Run("cli", func(t *testing.T) {
		root := newRoot(t)
		dpkg(t, root, "--install", cli)
		if out := chroot(t, root, nil, "/usr/bin/attestation", "--version"); !strings.HasPrefix(out, "attestation "+version+"\n") {
			t.Errorf("attestation --version from attestation-cli:\n%s", out)
		}
		// The full package takes its place.
		dpkg(t, root, "--install", full)
		status := run(t, "", "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "--showformat=${Package} ${Status}\n", "--show")
		if strings.Contains(status, "attestation-cli install ok installed") || !strings.Contains(status, "attestation install ok installed") {
			t.Errorf("after installing attestation over attestation-cli:\n%s", status)
		}
		dpkg(t, root, "--purge", "attestation")
		for _, gone := range []string{"usr/bin/attestationd", "etc/attestation/attestationd.yaml", "etc/systemd/system/multi-user.target.wants/attestationd.service"} {
			if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
				t.Errorf("/%s is still there after dpkg --purge", gone)
			}
		}
	})
}

// run runs a command in dir and returns its standard output; it fails
// the test, with the output, if the command does.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out) + stderr.String()
}

// chroot runs a program of the tree root, as root, with env alone.
func chroot(t *testing.T, root string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s %s %s: %v\n%s", root, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newRoot is an empty tree with dpkg's database: a root nothing is
// installed in.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dpkg runs dpkg on the tree root. The maintainer scripts run outside it
// with DPKG_ROOT set (the root has no shell); its dependencies are not
// installed there.
func dpkg(t *testing.T, root string, args ...string) {
	t.Helper()
	run(t, "", "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends"}, args...)...)
}

// files lists the files and links of a .deb, without its directories.
func files(t *testing.T, deb string) []string {
	t.Helper()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "", "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && !strings.HasPrefix(f[0], "d") {
			got = append(got, strings.TrimPrefix(f[5], "."))
		}
	}
	slices.Sort(got)
	return got
}
