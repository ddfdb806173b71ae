// Package bootassets makes the files attestationd serves to network-boot
// the agent: Debian's kernel (vmlinuz), fetched with apt-get download (no
// root needed), and the agent's initramfs (initrd.img) with that kernel's
// NIC modules, built by package initramfs.
package bootassets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/internal/atomicfile"
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
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("boot assets: dpkg-deb -x %s: %v\n%s", deb, err, out)
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
	res := &Result{Release: release, Kernel: filepath.Join(o.Out, "vmlinuz"), Initrd: filepath.Join(o.Out, "initrd.img"),
		KernelSize: int64(len(kernel)), InitrdSize: int64(img.Len()), ModulesResolved: resolved}
	for _, f := range []struct {
		path string
		data []byte
	}{{res.Kernel, kernel}, {res.Initrd, img.Bytes()}} {
		if err := atomicfile.Write(f.path, f.data, 0o644); err != nil {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
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
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("boot assets: apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("boot assets: apt-get download %s left %d .deb files, want one", pkg, len(debs))
	}
	return debs[0], nil
}
