package sysinit

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    Settings
	}{
		{
			name:    "typical",
			cmdline: "BOOT_IMAGE=/vmlinuz console=ttyS0 attestation.url=https://cp.example:9000 attestation.ca=/etc/attestation/ca.pem attestation.tpm=/dev/tpmrm0 quiet\n",
			want:    Settings{URL: "https://cp.example:9000", CA: "/etc/attestation/ca.pem", TPM: "/dev/tpmrm0"},
		},
		{
			name:    "modules in order",
			cmdline: "attestation.modules=virtio_ring,virtio,,virtio_pci, virtio_net attestation.url=http://10.0.2.2:9000",
			want: Settings{URL: "http://10.0.2.2:9000", Modules: []Module{
				{Name: "virtio_ring"}, {Name: "virtio"}, {Name: "virtio_pci"},
			}},
		},
		{
			name:    "quotes group and are removed",
			cmdline: `attestation.url="http://cp:9000" "attestation.tpm=tcp://10.0.0.1:2321" attestation.iface=52:54:00:12:34:56`,
			want:    Settings{URL: "http://cp:9000", TPM: "tcp://10.0.0.1:2321", Iface: "52:54:00:12:34:56"},
		},
		{
			name:    "later wins",
			cmdline: "attestation.url=http://a attestation.url=http://b attestation.pcrs=0-7,14",
			want:    Settings{URL: "http://b", PCRs: "0-7,14"},
		},
		{
			name:    "after -- belongs to init",
			cmdline: "attestation.url=http://a -- attestation.url=http://b",
			want:    Settings{URL: "http://a"},
		},
		{
			name:    "unknown and unrelated",
			cmdline: "attestationurl=x attestation.ulr=http://typo attestation.url= root=/dev/sda1",
			want:    Settings{Unknown: []string{"attestation.ulr"}},
		},
		{name: "empty", cmdline: "", want: Settings{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Parse(tt.cmdline); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", tt.cmdline, got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`attestation.url="http://x" attestation.modules=a,b -- x`)
	f.Fuzz(func(t *testing.T, s string) { Parse(s) })
}

func TestParseModules(t *testing.T) {
	text := `# virtio-net, in dependency order
virtio_ring
virtio
virtio_pci_legacy_dev   # comment after a name
virtio_pci_modern_dev
virtio_pci

e1000e  debug=1   copybreak=0
/lib/modules/extra/igb.ko
`
	want := []Module{
		{Name: "virtio_ring"}, {Name: "virtio"}, {Name: "virtio_pci_legacy_dev"},
		{Name: "virtio_pci_modern_dev"}, {Name: "virtio_pci"},
		{Name: "e1000e", Params: "debug=1 copybreak=0"},
		{Name: "/lib/modules/extra/igb.ko"},
	}
	if got := ParseModules(text); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseModules() =\n%+v\nwant\n%+v", got, want)
	}
	if got := ParseModules("\n# nothing\n"); got != nil {
		t.Errorf("ParseModules(comments only) = %v, want none", got)
	}
}

func TestReadModules(t *testing.T) {
	dir := t.TempDir()
	got, err := ReadModules(filepath.Join(dir, "missing"))
	if err != nil || got != nil {
		t.Errorf("ReadModules(missing) = %v, %v; want nil, nil", got, err)
	}
	file := filepath.Join(dir, "modules")
	if err := os.WriteFile(file, []byte("e1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = ReadModules(file)
	if want := []Module{{Name: "e1000"}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadModules() = %v, %v; want %v", got, err, want)
	}
}

func TestIndexModules(t *testing.T) {
	fsys := fstest.MapFS{
		"kernel/drivers/net/ethernet/intel/e1000/e1000.ko":      {},
		"kernel/drivers/net/virtio_net.ko.xz":                   {},
		"kernel/drivers/virtio/virtio-pci-modern-dev.ko.zst":    {},
		"kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.gz": {},
		"modules.dep":               {},
		"kernel/drivers/net/README": {},
	}
	got, err := IndexModules(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ModuleFile{
		"e1000":                 {Path: "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"},
		"virtio_net":            {Path: "kernel/drivers/net/virtio_net.ko.xz", Flags: unix.MODULE_INIT_COMPRESSED_FILE},
		"virtio_pci_modern_dev": {Path: "kernel/drivers/virtio/virtio-pci-modern-dev.ko.zst", Flags: unix.MODULE_INIT_COMPRESSED_FILE},
		"e1000e":                {Path: "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.gz", Flags: unix.MODULE_INIT_COMPRESSED_FILE},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("IndexModules() =\n%v\nwant\n%v", got, want)
	}
}

func TestLoadModulesMissing(t *testing.T) {
	got, err := LoadModules(t.TempDir(), []Module{{Name: "no_such_module_here"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Err == nil || got[0].Already {
		t.Errorf("LoadModules(missing module) = %+v, want one result with an error", got)
	}
}

func TestEntropyRequest(t *testing.T) {
	got := entropyRequest([]byte{1, 2, 3, 4})
	want := make([]byte, 12)
	binary.NativeEndian.PutUint32(want[0:], 32)
	binary.NativeEndian.PutUint32(want[4:], 4)
	copy(want[8:], []byte{1, 2, 3, 4})
	if !bytes.Equal(got, want) {
		t.Errorf("entropyRequest() = %x, want %x", got, want)
	}
}

func TestRandomReady(t *testing.T) {
	// A running test machine is long past early boot.
	if !RandomReady() {
		t.Error("RandomReady() = false on a booted machine")
	}
}
