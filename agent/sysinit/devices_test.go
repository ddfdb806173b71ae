package sysinit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The index an initramfs with the default NIC drivers carries, cut down.
const (
	testAlias = `# Aliases extracted from modules.alias
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d000010C9sv*sd*bc*sc*i* igb
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169
`
	testModDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/drivers/dca/dca.ko:
kernel/drivers/i2c/algos/i2c-algo-bit.ko:
kernel/drivers/net/ethernet/intel/igb/igb.ko: kernel/drivers/dca/dca.ko kernel/drivers/i2c/algos/i2c-algo-bit.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/dummy.ko:
`
	testList = `virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net
e1000 e1000e dca i2c-algo-bit igb libphy r8169 dummy`
)

func names(mods []Module) string {
	var n []string
	for _, m := range mods {
		n = append(n, m.Name)
	}
	return strings.Join(n, " ")
}

func TestNeeded(t *testing.T) {
	x := ParseModuleIndex(testAlias, testModDep)
	list := ParseModuleList(strings.Join(strings.Fields(testList), ","))
	for _, tt := range []struct {
		name       string
		modaliases []string
		want       string
	}{
		{"QEMU's e1000 (BIOS test)", []string{"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00"},
			"e1000 dummy"},
		{"virtio-net before virtio_pci", []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"},
			"virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci dummy"},
		{"virtio-net after virtio_pci", []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4"},
			"virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net dummy"},
		{"igb and a Realtek", []string{"pci:v00008086d000010C9sv00008086sd0000A03Cbc02sc00i00", "pci:v000010ECd00008168sv00001043sd00008432bc02sc00i00"},
			"dca i2c-algo-bit igb libphy r8169 dummy"},
		{"no known device", []string{"acpi:PNP0A03:", "platform:serial8250"}, "dummy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := names(x.Needed(list, tt.modaliases)); got != tt.want {
				t.Errorf("Needed: %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDeviceModaliases reads the modaliases of every bus's devices.
func TestDeviceModaliases(t *testing.T) {
	root := t.TempDir()
	for p, a := range map[string]string{
		"sys/bus/pci/devices/0000:00:03.0/modalias":  "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n",
		"sys/bus/virtio/devices/virtio0/modalias":    "virtio:d00000001v00001AF4\n",
		"sys/bus/platform/devices/serial8250/uevent": "DRIVER=serial8250\n",
	} {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(a), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := DeviceModaliases(root)
	slices.Sort(got)
	if want := []string{"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "virtio:d00000001v00001AF4"}; !slices.Equal(got, want) {
		t.Errorf("modaliases %q, want %q", got, want)
	}
}

// TestLoadForDevicesWithoutIndex: an initramfs without modules.alias
// (built before the agent chose by device) makes the caller load every
// module, as before.
func TestLoadForDevicesWithoutIndex(t *testing.T) {
	loaded, rest, err := LoadForDevices(t.TempDir(), t.TempDir(), []Module{{Name: "e1000"}})
	if !errors.Is(err, fs.ErrNotExist) || loaded != nil || rest != nil {
		t.Errorf("got %v, %v, %v; want fs.ErrNotExist and nothing loaded", loaded, rest, err)
	}
}

// TestLoadForDevicesNothingNeeded: with an index and no matching device,
// nothing is loaded and every driver is left.
func TestLoadForDevicesNothingNeeded(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(testAlias), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(testModDep), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, rest, err := LoadForDevices(dir, t.TempDir(), ParseModuleList("e1000,igb"))
	if err != nil || len(loaded) != 0 || names(rest) != "e1000 igb" {
		t.Errorf("got loaded %v, rest %s, err %v; want none loaded, e1000 and igb left", loaded, names(rest), err)
	}
}
