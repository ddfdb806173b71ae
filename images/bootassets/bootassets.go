// Package bootassets makes the files attestationd serves to network-boot
// the agent and builds images from: Debian's kernel (vmlinuz), fetched with
// apt-get download (no root needed), the agent's initramfs (initrd.img)
// with that kernel's NIC modules, built by package initramfs, and the boot
// loaders a bootable ISO needs (isolinux for BIOS, GRUB's EFI binary for
// UEFI). The kernel package and its module index stay beside them, so that
// an image can carry modules the agent's initramfs does not.
//
// The directory, once built:
//
//	vmlinuz, initrd.img        the agent's kernel and initramfs
//	isolinux.bin, ldlinux.c32  BIOS boot loader (Debian's isolinux, syslinux-common)
//	bootx64.efi                UEFI boot loader (Debian's signed GRUB for CDs)
//	kernel.deb                 the kernel package, for extra modules
//	modules/RELEASE/           its modules.dep and modules.builtin
//	boot-assets.json           the Manifest
package bootassets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/internal/atomicfile"
	"github.com/attestation/attestation/internal/debian"
)

// DefaultModules are the NIC drivers the agent's initramfs carries unless
// told otherwise: QEMU's and the common server NICs that Debian's kernel
// builds as modules (its TPM drivers are built in).
var DefaultModules = []string{
	"virtio_pci", "virtio_net", // QEMU, most clouds
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", // Intel
	"tg3", "bnxt_en", // Broadcom
	"r8169", // Realtek
}

// Options say what to build.
type Options struct {
	// Out is the boot assets directory (attestationd --boot-assets).
	Out string
	// Agent is the static agent binary.
	Agent []byte
	// Package is the kernel's Debian package (default linux-image-amd64,
	// whose dependency names the versioned kernel package).
	Package string
	// Modules are the kernel modules to carry (default DefaultModules).
	Modules []string
	// Work is a scratch directory (default: a new temp dir, removed).
	Work   string
	Logger *slog.Logger
}

// Result says what was built.
type Result struct {
	Dir             string
	Release         string
	Kernel, Initrd  string
	InitrdSize      int64
	KernelSize      int64
	ModulesResolved []string
}

// Build fetches the kernel package, extracts it, and writes vmlinuz and
// initrd.img into Out, each atomically (a temp file, fsynced, renamed):
// a failed build leaves what was there.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Package == "" {
		o.Package = "linux-image-amd64"
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(o.Agent) == 0 {
		return nil, errors.New("boot assets: no agent binary (make agent builds bin/attestation-agent)")
	}
	if o.Work == "" {
		dir, err := os.MkdirTemp("", "boot-assets-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Work = dir
	}
	deb, err := download(ctx, o.Work, o.Package, log)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(o.Work, "root")
	log.Info("extracting the kernel package", "deb", filepath.Base(deb))
	if err := debian.Extract(ctx, deb, root); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return nil, fmt.Errorf("boot assets: %s holds %d kernels (boot/vmlinuz-*), want one", filepath.Base(deb), len(kernels))
	}
	release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	// The package ships no modules.dep: its install makes it. depmod
	// makes it in the extracted tree, no root needed.
	if out, err := exec.CommandContext(ctx, depmod(), "-b", root, release).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("boot assets: depmod -b %s %s: %v\n%s", root, release, err, out)
	}
	k, err := initramfs.OpenKernel(filepath.Join(root, "lib", "modules", release))
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	resolved, err := k.Resolve(o.Modules...)
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	var img bytes.Buffer
	if err := initramfs.Write(&img, initramfs.Spec{Agent: o.Agent, Kernel: k, Modules: o.Modules}); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	kernel, err := os.ReadFile(kernels[0])
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	loaders, err := fetchLoaders(ctx, o.Work, log)
	if err != nil {
		return nil, err
	}
	res := &Result{Dir: o.Out, Release: release, Kernel: filepath.Join(o.Out, Kernel), Initrd: filepath.Join(o.Out, Initrd),
		KernelSize: int64(len(kernel)), InitrdSize: int64(img.Len()), ModulesResolved: resolved}
	if err := os.MkdirAll(filepath.Join(o.Out, "modules", release), 0o755); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	files := map[string][]byte{Kernel: kernel, Initrd: img.Bytes()}
	for name, b := range loaders {
		files[name] = b
	}
	for _, name := range []string{"modules.dep", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(root, "lib", "modules", release, name))
		if err != nil {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
		files[path.Join("modules", release, name)] = b
	}
	if files[KernelDeb], err = os.ReadFile(deb); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	m := Manifest{Release: release, KernelPackage: strings.TrimSuffix(filepath.Base(deb), ".deb"), Modules: o.Modules, ModulesResolved: resolved}
	if files[ManifestFile], err = json.MarshalIndent(m, "", "  "); err != nil {
		return nil, err
	}
	// The manifest last: a directory with a manifest is complete.
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if name == ManifestFile {
			continue
		}
		if err := atomicfile.Write(filepath.Join(o.Out, filepath.FromSlash(name)), files[name], 0o644); err != nil {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
	}
	if err := atomicfile.Write(filepath.Join(o.Out, ManifestFile), append(files[ManifestFile], '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	log.Info("boot assets written", "dir", o.Out, "kernel", release, "vmlinuz_bytes", res.KernelSize,
		"initrd_bytes", res.InitrdSize, "agent_bytes", len(o.Agent), "modules", len(resolved))
	return res, nil
}

// depmod is kmod's depmod, which Debian keeps in /sbin.
func depmod() string {
	if p, err := exec.LookPath("depmod"); err == nil {
		return p
	}
	return "/sbin/depmod"
}

// versioned finds the versioned kernel package a metapackage depends on.
var versioned = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[0-9][^\s]*)`)

// download fetches the kernel package into dir with apt-get download and
// returns the .deb's path; a metapackage (linux-image-amd64) is followed
// to the versioned package it depends on.
func download(ctx context.Context, dir, pkg string, log *slog.Logger) (string, error) {
	if out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).CombinedOutput(); err == nil {
		if m := versioned.FindSubmatch(out); m != nil {
			log.Info("kernel package", "metapackage", pkg, "package", string(m[1]))
			pkg = string(m[1])
		}
	} else {
		return "", fmt.Errorf("boot assets: apt-cache depends %s: %v\n%s(run apt-get update first?)", pkg, err, out)
	}
	log.Info("downloading the kernel package", "package", pkg)
	deb, err := debian.Download(ctx, dir, pkg)
	if err != nil {
		return "", fmt.Errorf("boot assets: %w", err)
	}
	return deb, nil
}

// loaders are the boot loader files an ISO needs: asset name, Debian
// package, path in the package.
var loaders = []struct{ name, pkg, path string }{
	{ISOLinux, "isolinux", "usr/lib/ISOLINUX/isolinux.bin"},
	{LDLinux, "syslinux-common", "usr/lib/syslinux/modules/bios/ldlinux.c32"},
	// Debian's GRUB image for CDs: it finds the disc by /.disk/info and
	// reads /boot/grub/grub.cfg from it.
	{GRUBEFI, "grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"},
}

// fetchLoaders downloads and extracts the boot loaders' packages.
func fetchLoaders(ctx context.Context, work string, log *slog.Logger) (map[string][]byte, error) {
	dir := filepath.Join(work, "loaders")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	got := map[string][]byte{}
	for _, l := range loaders {
		log.Info("downloading a boot loader", "package", l.pkg, "file", l.name)
		deb, err := debian.Download(ctx, dir, l.pkg)
		if err != nil {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
		root := filepath.Join(dir, l.pkg)
		if err := debian.Extract(ctx, deb, root); err != nil {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(l.path)))
		if err != nil {
			return nil, fmt.Errorf("boot assets: %s has no /%s: %w", l.pkg, l.path, err)
		}
		got[l.name] = b
	}
	return got, nil
}
