package bootassets_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/internal/testenv"
)

// TestBuild fetches Debian's kernel package and builds the boot assets
// twice, into two directories from two downloads: the initramfs is the
// same bytes both times, under 10 MB, and carries the agent and the NIC
// modules with their dependencies.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian's kernel package (about 70 MB)")
	}
	testenv.Integration(t, "boot assets from Debian's kernel package (apt-get download)")
	for _, tool := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"}} {
		testenv.LookPath(t, tool.name, tool.pkg)
	}
	if _, err := exec.LookPath("depmod"); err != nil {
		testenv.File(t, "/sbin/depmod", "kmod")
	}
	agent := []byte("\x7fELF a stand-in for the agent")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		initrds [2][]byte
		last    string
	)
	for i := range initrds {
		out := filepath.Join(t.TempDir(), "boot")
		start := time.Now()
		res, err := bootassets.Build(ctx, bootassets.Options{Out: out, Agent: agent, Work: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d: kernel %s, vmlinuz %d bytes, initrd.img %d bytes, %d modules, in %v",
			i+1, res.Release, res.KernelSize, res.InitrdSize, len(res.ModulesResolved), time.Since(start).Round(time.Millisecond))
		if initrds[i], err = os.ReadFile(res.Initrd); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(res.Kernel); err != nil || fi.Size() < 1<<20 {
			t.Fatalf("vmlinuz: %v, want a kernel", err)
		}
		if res.InitrdSize >= 10<<20 {
			t.Errorf("initrd.img is %d bytes, want under 10 MB", res.InitrdSize)
		}
		last = out
		left, _ := filepath.Glob(filepath.Join(out, ".*"))
		if len(left) > 0 {
			t.Errorf("temporary files left in the boot assets: %v", left)
		}
	}
	if !bytes.Equal(initrds[0], initrds[1]) {
		t.Fatal("two builds from two downloads gave different initramfs bytes")
	}
	zr, err := gzip.NewReader(bytes.NewReader(initrds[0]))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	for _, want := range []string{"etc/attestation/modules", "virtio_net.ko", "e1000.ko", "net_failover.ko", "failover.ko", "a stand-in for the agent"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("the initramfs has no %s", want)
		}
	}

	// The rest of the directory: the loaders, the kernel package and its
	// module index, and a manifest saying what was built.
	a, err := bootassets.Open(last)
	if err != nil {
		t.Fatal(err)
	}
	if a.Release == "" || len(a.ModulesResolved) < len(bootassets.DefaultModules) || !strings.HasPrefix(a.KernelPackage, "linux-image-") {
		t.Errorf("manifest %+v", a.Manifest)
	}
	for name, magic := range map[string]string{bootassets.GRUBEFI: "MZ", bootassets.ISOLinux: "", bootassets.LDLinux: "\x7fELF", bootassets.KernelDeb: "!<arch>\n"} {
		b, err := os.ReadFile(a.Path(name))
		if err != nil || len(b) < 1024 || !strings.HasPrefix(string(b), magic) {
			t.Errorf("%s: %v, %d bytes; want a real file", name, err, len(b))
		}
	}
	// A module not in the agent's initramfs comes out of the kernel
	// package, with its dependencies, and nothing else does.
	k, err := a.ModuleTree(ctx, t.TempDir(), a.ModulesResolved, "e1000", "dummy")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	filepath.WalkDir(k.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			found = append(found, filepath.Base(p))
		}
		return nil
	})
	if strings.Join(found, " ") != "dummy.ko" {
		t.Errorf("module tree for dummy holds %v, want dummy.ko alone (e1000 is in the agent's initramfs)", found)
	}
	if _, err := a.ModuleTree(ctx, t.TempDir(), nil, "no_such_module"); err == nil || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("an unknown module: %v", err)
	}

	// A module the kernel does not have: a clear error, nothing written.
	out := filepath.Join(t.TempDir(), "boot")
	_, err = bootassets.Build(ctx, bootassets.Options{Out: out, Agent: agent, Modules: []string{"e1000", "no_such_nic"}, Work: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `no module "no_such_nic"`) {
		t.Errorf("an unknown module: %v, want an error naming it", err)
	}
	if _, err := os.Stat(filepath.Join(out, "initrd.img")); err == nil {
		t.Error("a failed build wrote initrd.img")
	}
}
