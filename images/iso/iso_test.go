package iso_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/attestation/attestation/images/iso"
	"github.com/attestation/attestation/internal/testenv"
)

// inputs writes stand-ins for a kernel, an initramfs and the loaders. The
// structure checks need no real ones; the VM tests boot the real ones.
func inputs(t *testing.T) iso.Spec {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, size int, fill byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{fill}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return iso.Spec{
		Kernel: write("vmlinuz", 300<<10, 'k'), Initrd: write("initrd.img", 200<<10, 'i'),
		ISOLinux: write("isolinux.bin", 38912, 'b'), LDLinux: write("ldlinux.c32", 4096, 'l'),
		GRUBEFI: write("bootx64.efi", 100<<10, 'g'),
		Args:    []string{"console=ttyS0", "attestation.url=http://10.0.2.2:8080", "quote='x'"},
		Label:   "ATTESTATION_0123456789ABCDEF",
	}
}

func build(t *testing.T, s iso.Spec) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "attestation.iso")
	if err := iso.Write(p, t.TempDir(), s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// TestReproducible builds the same image twice, from inputs dated
// differently on disk, a second apart: the same bytes.
func TestReproducible(t *testing.T) {
	s := inputs(t)
	_, a := build(t, s)
	time.Sleep(1100 * time.Millisecond)
	later := time.Now().Add(time.Hour)
	for _, p := range []string{s.Kernel, s.Initrd, s.GRUBEFI} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	_, b := build(t, s)
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Fatal("two builds of the same inputs differ")
	}
	if len(a)%2048 != 0 || len(a) > 2<<20 {
		t.Errorf("image is %d bytes: want whole sectors, trimmed to what it holds", len(a))
	}
	s.Args = append(s.Args, "another=arg")
	if _, c := build(t, s); bytes.Equal(a, c) {
		t.Error("another command line gave the same image")
	}
}

// TestStructure reads the image back with go-diskfs: the files, the
// loaders' configs with the command line, and the EFI image's GRUB.
func TestStructure(t *testing.T) {
	s := inputs(t)
	p, _ := build(t, s)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := iso9660.Read(file.New(f, true), 0, 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Label(); strings.TrimRight(got, " \x00") != s.Label {
		t.Errorf("volume label %q, want %q", got, s.Label)
	}
	read := func(name string) []byte {
		t.Helper()
		fh, err := img.OpenFile(name, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := io.ReadAll(fh)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return b
	}
	for path, src := range map[string]string{"/BOOT/VMLINUZ": s.Kernel, "/BOOT/INITRD.IMG": s.Initrd, "/ISOLINUX/LDLINUX.C32": s.LDLinux} {
		want, _ := os.ReadFile(src)
		if !bytes.Equal(read(path), want) {
			t.Errorf("%s is not %s", path, src)
		}
	}
	cmdline := strings.Join(s.Args, " ")
	if cfg := string(read("/ISOLINUX/ISOLINUX.CFG")); !strings.Contains(cfg, "APPEND initrd=/boot/initrd.img "+cmdline+"\n") {
		t.Errorf("isolinux.cfg has not the command line:\n%s", cfg)
	}
	grub := string(read("/BOOT/GRUB/GRUB.CFG"))
	for _, want := range []string{"search --no-floppy --label --set=root " + s.Label + "\n", `'quote='\''x'\'''`, "linux /boot/vmlinuz 'console=ttyS0'", "initrd /boot/initrd.img"} {
		if !strings.Contains(grub, want) {
			t.Errorf("grub.cfg has no %q:\n%s", want, grub)
		}
	}

	// The EFI image: a FAT filesystem with GRUB where UEFI looks for a
	// removable medium's loader, and the same config.
	esp := filepath.Join(t.TempDir(), "efiboot.img")
	if err := os.WriteFile(esp, read("/BOOT/EFIBOOT.IMG"), 0o644); err != nil {
		t.Fatal(err)
	}
	ef, err := os.Open(esp)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	fi, _ := ef.Stat()
	fat, err := fat12.Read(file.New(ef, true), fi.Size(), 0, 512)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(s.GRUBEFI)
	if got, err := fat.ReadFile("/EFI/BOOT/BOOTX64.EFI"); err != nil || !bytes.Equal(got, want) {
		t.Errorf("EFI/BOOT/BOOTX64.EFI: %v, want GRUB's binary", err)
	}
	if got, err := fat.ReadFile("/boot/grub/grub.cfg"); err != nil || string(got) != grub {
		t.Errorf("the EFI image's grub.cfg: %v, want the disc's", err)
	}
}

// TestElTorito has xorriso report the boot catalog: a BIOS entry for
// isolinux with a boot info table, and a UEFI entry for the EFI image.
func TestElTorito(t *testing.T) {
	testenv.Integration(t, "xorriso reads the El Torito catalog")
	xorriso := testenv.LookPath(t, "xorriso", "xorriso")
	p, _ := build(t, inputs(t))
	out, err := exec.Command(xorriso, "-indev", p, "-report_el_torito", "plain").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	report := string(out)
	for _, want := range []string{
		"Boot record  : El Torito",
		"El Torito cat path : /ISOLINUX/BOOT.CAT",
		"El Torito img path :   1  /ISOLINUX/ISOLINUX.BIN",
		"El Torito img opts :   1  boot-info-table",
		"El Torito img path :   2  /BOOT/EFIBOOT.IMG",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("xorriso's report has no %q:\n%s", want, report)
		}
	}
	var bios, uefi bool
	for _, line := range strings.Split(report, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[0] == "El" && f[2] == "boot" && f[3] == "img" {
			bios = bios || (f[5] == "1" && f[6] == "BIOS" && f[8] == "none")
			uefi = uefi || (f[5] == "2" && f[6] == "UEFI" && f[8] == "none")
		}
	}
	if !bios || !uefi {
		t.Errorf("want a BIOS and a UEFI no-emulation entry:\n%s", report)
	}
}

// TestBadInput: a bad label, an argument with a space, a missing loader:
// an error, and no image.
func TestBadInput(t *testing.T) {
	for name, mutate := range map[string]func(*iso.Spec){
		"label":   func(s *iso.Spec) { s.Label = "bad label" },
		"arg":     func(s *iso.Spec) { s.Args = []string{"two words"} },
		"loader":  func(s *iso.Spec) { s.GRUBEFI = filepath.Join(t.TempDir(), "missing.efi") },
		"isolinx": func(s *iso.Spec) { s.ISOLinux = "" },
	} {
		t.Run(name, func(t *testing.T) {
			s := inputs(t)
			mutate(&s)
			p := filepath.Join(t.TempDir(), "x.iso")
			if err := iso.Write(p, t.TempDir(), s); err == nil {
				t.Fatal("no error")
			}
			if _, err := os.Stat(p); err == nil {
				t.Error("an image was written")
			}
		})
	}
}
