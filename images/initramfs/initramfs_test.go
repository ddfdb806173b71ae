package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// fakeKernel writes a module tree: modules.dep, modules.builtin and a
// file per module holding its name.
func fakeKernel(t *testing.T, dep string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "6.1.0-test-amd64")
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, _, _ := strings.Cut(line, ":")
		p := filepath.Join(dir, mod)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("module "+mod), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/char/tpm/tpm_tis.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(testAlias), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const testAlias = `# Aliases extracted from modules information
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d000010C9sv*sd*bc*sc*i* igb
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias net-pf-99 not_carried
`

const testDep = `kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/intel/igb/igb.ko: kernel/drivers/dca/dca.ko kernel/drivers/i2c/algos/i2c-algo-bit.ko
kernel/drivers/dca/dca.ko:
kernel/drivers/i2c/algos/i2c-algo-bit.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/a.ko
`

func TestResolve(t *testing.T) {
	k, err := OpenKernel(fakeKernel(t, testDep))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		modules []string
		want    string // module names in order, or the error
	}{
		{"no dependencies", []string{"e1000"}, "e1000"},
		{"dependencies first", []string{"igb"}, "dca i2c_algo_bit igb"},
		{"each once, in a load order", []string{"virtio_net", "virtio_pci"},
			"failover net_failover virtio_ring virtio virtio_net virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci"},
		{"dashes and underscores alike", []string{"i2c_algo_bit", "i2c-algo-bit"}, "i2c_algo_bit"},
		{"built in: nothing to load", []string{"tpm_tis", "e1000"}, "e1000"},
		{"unknown", []string{"e1000", "nosuch"}, `no module "nosuch"`},
		{"a cycle", []string{"a"}, "depend on each other"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			files, err := k.Resolve(tt.modules...)
			var got []string
			for _, f := range files {
				got = append(got, moduleName(f))
			}
			s := strings.Join(got, " ")
			if err != nil {
				s = err.Error()
			}
			if !strings.Contains(s, tt.want) || (err == nil && s != tt.want) {
				t.Errorf("Resolve(%v) = %s, want %s", tt.modules, s, tt.want)
			}
		})
	}
}

func spec(t *testing.T, dir string) Spec {
	k, err := OpenKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Agent:   []byte("\x7fELF agent"),
		Kernel:  k,
		Modules: []string{"virtio_net", "igb"},
		Files: map[string]File{
			"etc/attestation/settings": {Data: []byte("attestation.url=http://cp:9000\n")},
			"etc/attestation/ca.pem":   {Data: []byte("-----BEGIN CERTIFICATE-----\n"), Mode: 0o600},
		},
	}
}

func build(t *testing.T, s Spec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, s); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReproducible: the same inputs give the same bytes, also when the
// files on disk have other mtimes and the build runs at another time.
func TestReproducible(t *testing.T) {
	dir := fakeKernel(t, testDep)
	first := build(t, spec(t, dir))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	time.Sleep(1100 * time.Millisecond)
	if second := build(t, spec(t, dir)); !bytes.Equal(first, second) {
		t.Fatal("two builds of the same inputs differ")
	}
	// And another input gives other bytes.
	s := spec(t, dir)
	s.Files["etc/attestation/settings"] = File{Data: []byte("attestation.url=http://other:9000\n")}
	if other := build(t, s); bytes.Equal(first, other) {
		t.Fatal("a changed file did not change the image")
	}
}

// TestContents reads the archive back: the skeleton, /dev/console, /init,
// the modules with the list naming them in load order, the extra files.
func TestContents(t *testing.T) {
	img := build(t, spec(t, fakeKernel(t, testDep)))
	zr, err := gzip.NewReader(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]cpio.Record{}
	inos := map[uint64]bool{}
	for _, r := range recs {
		got[r.Name] = r
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 || inos[r.Ino] {
			t.Errorf("%s: mtime %d uid %d gid %d ino %d; want 0, 0, 0 and an inode of its own", r.Name, r.MTime, r.UID, r.GID, r.Ino)
		}
		inos[r.Ino] = true
	}
	read := func(name string) string {
		r, ok := got[name]
		if !ok {
			t.Fatalf("no %s in the archive", name)
		}
		b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		return string(b)
	}
	for _, d := range []string{"dev", "etc", "etc/attestation", "proc", "sys", "run", "tmp", "lib/modules/6.1.0-test-amd64/kernel/drivers/net"} {
		if r, ok := got[d]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFDIR || r.Mode&0o777 != 0o755 {
			t.Errorf("directory %s: %+v, want a 0755 directory", d, r.Info)
		}
	}
	if c := got["dev/console"]; c.Mode != cpio.S_IFCHR|0o600 || c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console: %+v, want char device 5:1 0600", c.Info)
	}
	if read("init") != "\x7fELF agent" || got["init"].Mode != cpio.S_IFREG|0o755 {
		t.Errorf("init: %+v, want the agent, 0755", got["init"].Info)
	}
	wantList := "failover net_failover virtio_ring virtio virtio_net dca i2c_algo_bit igb"
	var list []string
	for _, l := range strings.Split(read(ModulesFile), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			list = append(list, l)
		}
	}
	if strings.Join(list, " ") != wantList {
		t.Errorf("module list %q, want %q", list, wantList)
	}
	if read("lib/modules/6.1.0-test-amd64/kernel/drivers/dca/dca.ko") != "module kernel/drivers/dca/dca.ko" {
		t.Error("dca.ko is not the module file")
	}
	// The module tree's index, for the modules carried only.
	if got, want := read("lib/modules/6.1.0-test-amd64/modules.alias"), "# Aliases extracted from modules.alias\n"+
		"alias pci:v00008086d000010C9sv*sd*bc*sc*i* igb\nalias virtio:d00000001v* virtio_net\n"; got != want {
		t.Errorf("modules.alias:\n%s\nwant\n%s", got, want)
	}
	if got := read("lib/modules/6.1.0-test-amd64/modules.dep"); !strings.Contains(got, "\nkernel/drivers/net/ethernet/intel/igb/igb.ko: kernel/drivers/dca/dca.ko kernel/drivers/i2c/algos/i2c-algo-bit.ko\n") ||
		strings.Count(got, "\n") != len(list) || strings.Contains(got, "e1000") {
		t.Errorf("modules.dep:\n%s\nwant a line for each of %v", got, list)
	}
	if got["etc/attestation/ca.pem"].Mode != cpio.S_IFREG|0o600 || read("etc/attestation/settings") == "" {
		t.Error("the extra files are not as given")
	}
}

func TestBadSpecs(t *testing.T) {
	dir := fakeKernel(t, testDep)
	for _, tt := range []struct {
		name   string
		change func(*Spec)
		want   string
	}{
		{"no agent", func(s *Spec) { s.Agent = nil }, "no agent"},
		{"unknown module", func(s *Spec) { s.Modules = []string{"nosuch"} }, `no module "nosuch"`},
		{"modules without a kernel", func(s *Spec) { s.Kernel = nil }, "without a kernel"},
		{"a path out of the image", func(s *Spec) { s.Files["../etc/passwd"] = File{} }, "clean relative path"},
		{"an absolute path", func(s *Spec) { s.Files["/etc/x"] = File{} }, "clean relative path"},
		{"an unclean path", func(s *Spec) { s.Files["etc/../init"] = File{} }, "clean relative path"},
		{"the init", func(s *Spec) { s.Files["init"] = File{} }, "writes that file itself"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := spec(t, dir)
			tt.change(&s)
			var buf bytes.Buffer
			err := Write(&buf, s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Write: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// TestOverlay: an overlay of one more module carries that module and
// the dependencies the base lacks, a full module list, the extra files,
// and no /init or /dev/console; appended to the base, a cpio reader sees
// both archives in order.
func TestOverlay(t *testing.T) {
	k, err := OpenKernel(fakeKernel(t, testDep))
	if err != nil {
		t.Fatal(err)
	}
	have, err := k.Resolve("virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	var over bytes.Buffer
	err = Write(&over, Spec{Overlay: true, Have: have, Kernel: k, Modules: []string{"virtio_net", "virtio_pci"},
		Files: map[string]File{"etc/attestation/ca.pem": {Data: []byte("ca")}}})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&over)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(must(io.ReadAll(zr)))))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		if r.Mode&cpio.S_IFMT == cpio.S_IFREG {
			names = append(names, r.Name)
		}
	}
	want := "etc/attestation/ca.pem etc/attestation/modules lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/virtio_pci.ko " +
		"lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/virtio_pci_legacy_dev.ko lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/virtio_pci_modern_dev.ko " +
		"lib/modules/6.1.0-test-amd64/modules.alias lib/modules/6.1.0-test-amd64/modules.dep"
	if strings.Join(names, " ") != want {
		t.Errorf("overlay files:\n%s\nwant\n%s", strings.Join(names, " "), want)
	}
	for _, r := range recs {
		if r.Name == "init" || r.Name == "dev/console" {
			t.Errorf("the overlay has %s", r.Name)
		}
		if r.Name == ModulesFile {
			b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if !strings.HasSuffix(string(b), "virtio_net\nvirtio_pci_legacy_dev\nvirtio_pci_modern_dev\nvirtio_pci\n") {
				t.Errorf("module list:\n%s", b)
			}
		}
	}
	if err := Write(io.Discard, Spec{Overlay: true, Agent: []byte("x")}); err == nil {
		t.Error("an overlay with an agent: no error")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
