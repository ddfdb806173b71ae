// Package iso builds a bootable ISO 9660 image of a kernel, its initramfs
// and a command line, with El Torito entries for BIOS (isolinux) and UEFI
// (an EFI system partition image holding GRUB's EFI binary). It is written
// in Go (go-diskfs); no mkisofs, xorriso or mtools.
//
// The image, in plain ISO 9660 names (upper case, 8.3; isolinux and GRUB
// match them without regard to case), without Joliet or Rock Ridge, whose
// go-diskfs records are either not readable or not reproducible:
//
//	/isolinux/isolinux.bin, ldlinux.c32, isolinux.cfg, boot.cat
//	/boot/vmlinuz, /boot/initrd.img
//	/boot/grub/grub.cfg
//	/boot/efiboot.img     FAT12: /EFI/BOOT/BOOTX64.EFI, /boot/grub/grub.cfg
//
// GRUB (Debian's CD image, gcdx64.efi) starts on the EFI image and reads
// /boot/grub/grub.cfg from the device it started on; that config finds
// the disc by its volume label, which should therefore be unique to the
// image (a schematic's ISO is labelled with its ID), and boots from it.
//
// The same inputs give the same bytes: every file, directory and volume
// descriptor is dated Date.
package iso

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// Date is the date of everything in an image.
var Date = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// Paths inside the image.
const (
	KernelPath   = "/boot/vmlinuz"
	InitrdPath   = "/boot/initrd.img"
	ISOLinuxPath = "/isolinux/isolinux.bin"
	EFIBootPath  = "/boot/efiboot.img"
	CatalogPath  = "/isolinux/boot.cat"
	// GRUBConfigPath is GRUB's config, on the disc and in the EFI image.
	GRUBConfigPath = "/boot/grub/grub.cfg"
)

// Spec is what an image boots.
type Spec struct {
	// Kernel and Initrd are the kernel's and initramfs's files.
	Kernel, Initrd string
	// Args is the kernel command line, one argument each (no spaces).
	Args []string
	// ISOLinux and LDLinux are isolinux.bin and ldlinux.c32 (Debian's
	// isolinux and syslinux-common); GRUBEFI is GRUB's EFI binary for
	// CDs (Debian's gcdx64.efi).
	ISOLinux, LDLinux, GRUBEFI string
	// Label is the volume identifier: up to 32 of A-Z, 0-9 and _
	// (default ATTESTATION).
	Label string
}

var labelChars = regexp.MustCompile(`^[A-Z0-9_]{1,32}$`)

// Write writes the image of s to path, using work (an empty directory) as
// its scratch space. On error, path is removed.
func Write(path, work string, s Spec) (err error) {
	root := filepath.Join(work, "root")
	if err := Tree(root, s); err != nil {
		return err
	}
	size, err := dateTree(root)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(path)
		}
	}()
	// Room for the files, each rounded up to a sector, and the system
	// area, descriptors, directories and catalog; trimmed below.
	room := size + 4<<20
	if err := f.Truncate(room); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	img, err := iso9660.Create(file.New(f, false), room, 0, 2048, root)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	err = img.Finalize(iso9660.FinalizeOptions{
		VolumeIdentifier: s.Label,
		Timestamp:        Date,
		ElTorito: &iso9660.ElTorito{
			BootCatalog: CatalogPath,
			Entries: []*iso9660.ElToritoEntry{
				{Platform: iso9660.BIOS, Emulation: iso9660.NoEmulation, BootFile: ISOLinuxPath, BootTable: true},
				{Platform: iso9660.EFI, Emulation: iso9660.NoEmulation, BootFile: EFIBootPath},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("iso: finalize: %w", err)
	}
	// The volume's size, in sectors, is in the primary volume descriptor
	// (sector 16, offset 80, both-endian: the little-endian half first).
	var vd [2048]byte
	if _, err := f.ReadAt(vd[:], 16*2048); err != nil {
		return fmt.Errorf("iso: read back the volume descriptor: %w", err)
	}
	sectors := int64(vd[80]) | int64(vd[81])<<8 | int64(vd[82])<<16 | int64(vd[83])<<24
	if vd[0] != 1 || string(vd[1:6]) != "CD001" || sectors <= 16 || sectors*2048 > room {
		return errors.New("iso: the written image has no sane primary volume descriptor")
	}
	if err := f.Truncate(sectors * 2048); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	return f.Close()
}

// Tree lays out the files of the image of s under root, as Write puts
// them on the disc (so that other tools can be given the same tree).
func Tree(root string, s Spec) error {
	for _, a := range s.Args {
		if a == "" || strings.ContainsAny(a, " \t\r\n") {
			return fmt.Errorf("iso: kernel argument %q: want one word", a)
		}
	}
	if s.Label == "" {
		s.Label = "ATTESTATION"
	}
	if !labelChars.MatchString(s.Label) {
		return fmt.Errorf("iso: volume label %q: want up to 32 of A-Z, 0-9 and _", s.Label)
	}
	cmdline := strings.Join(s.Args, " ")
	copies := map[string]string{
		KernelPath: s.Kernel, InitrdPath: s.Initrd,
		ISOLinuxPath: s.ISOLinux, "/isolinux/ldlinux.c32": s.LDLinux,
	}
	texts := map[string]string{
		"/isolinux/isolinux.cfg": isolinuxConfig(cmdline),
		GRUBConfigPath:           grubConfig(s.Label, s.Args),
	}
	for dst, src := range copies {
		if err := copyFile(filepath.Join(root, filepath.FromSlash(dst)), src); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
	}
	for dst, text := range texts {
		if err := writeFile(filepath.Join(root, filepath.FromSlash(dst)), []byte(text)); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
	}
	return efiBoot(filepath.Join(root, filepath.FromSlash(EFIBootPath)), s.GRUBEFI, texts[GRUBConfigPath])
}

// isolinuxConfig boots the kernel at once, with no menu.
func isolinuxConfig(cmdline string) string {
	return "DEFAULT attestation\nPROMPT 0\nTIMEOUT 0\n\nLABEL attestation\n" +
		"  KERNEL " + KernelPath + "\n" +
		"  APPEND initrd=" + InitrdPath + " " + cmdline + "\n"
}

// grubConfig finds the disc labelled label and boots its kernel at once;
// each argument is single-quoted, so that GRUB expands nothing in it.
func grubConfig(label string, args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return "search --no-floppy --label --set=root " + label + "\n" +
		"set default=0\nset timeout=0\n\nmenuentry 'attestation agent' {\n" +
		"\tlinux " + KernelPath + " " + strings.Join(quoted, " ") + "\n" +
		"\tinitrd " + InitrdPath + "\n}\n"
}

// efiBoot writes the EFI system partition image: a FAT12 filesystem with
// GRUB as the removable-media boot loader and its config, each entry dated
// the FAT epoch (go-diskfs, created reproducible).
func efiBoot(path, grub, config string) error {
	b, err := os.ReadFile(grub)
	if err != nil {
		return fmt.Errorf("iso: GRUB's EFI binary: %w", err)
	}
	// The binary, rounded up to 64 KiB, and room for the FAT and
	// directories; FAT12 holds up to 4084 clusters.
	size := (int64(len(b))+(64<<10)-1)/(64<<10)*(64<<10) + 256<<10
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	fat, err := fat12.Create(file.New(f, false), size, 0, 512, "EFIBOOT", true)
	if err != nil {
		return fmt.Errorf("iso: EFI boot image: %w", err)
	}
	if err := fat.Mkdir("/EFI/BOOT"); err != nil {
		return fmt.Errorf("iso: EFI boot image: %w", err)
	}
	if err := fat.Mkdir("/boot/grub"); err != nil {
		return fmt.Errorf("iso: EFI boot image: %w", err)
	}
	for _, e := range []struct {
		path string
		data []byte
	}{{"/EFI/BOOT/BOOTX64.EFI", b}, {GRUBConfigPath, []byte(config)}} {
		w, err := fat.OpenFile(e.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("iso: EFI boot image: %s: %w", e.path, err)
		}
		if _, err := w.Write(e.data); err != nil {
			return fmt.Errorf("iso: EFI boot image: %s: %w", e.path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("iso: EFI boot image: %s: %w", e.path, err)
		}
	}
	return f.Close()
}

// dateTree dates every file and directory under root with Date, deepest
// first, and returns the files' size rounded up to whole sectors.
func dateTree(root string) (int64, error) {
	var paths []string
	var size int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += (fi.Size() + 2047) / 2048 * 2048
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	slices.Reverse(paths)
	for _, p := range paths {
		if err := os.Chtimes(p, Date, Date); err != nil {
			return 0, err
		}
	}
	return size, nil
}

func copyFile(dst, src string) error {
	if src == "" {
		return fmt.Errorf("no file for %s", filepath.Base(dst))
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, b)
}

func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
