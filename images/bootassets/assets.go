package bootassets

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/attestation/attestation/images/initramfs"
)

// The files of a boot assets directory.
const (
	Kernel       = "vmlinuz"
	Initrd       = "initrd.img"
	ISOLinux     = "isolinux.bin"
	LDLinux      = "ldlinux.c32"
	GRUBEFI      = "bootx64.efi"
	KernelDeb    = "kernel.deb"
	ManifestFile = "boot-assets.json"
)

// Manifest says what a boot assets directory holds.
type Manifest struct {
	// Release is the kernel's release (uname -r).
	Release string `json:"release"`
	// KernelPackage is the kernel .deb's name, version and architecture.
	KernelPackage string `json:"kernel_package"`
	// Modules are the modules asked for in the agent's initramfs, and
	// ModulesResolved the files it carries (dependencies first).
	Modules         []string `json:"modules"`
	ModulesResolved []string `json:"modules_resolved"`
}

// Assets is a built boot assets directory.
type Assets struct {
	Dir string
	Manifest
}

// ErrNotBuilt is Open's error for a directory without a complete build.
var ErrNotBuilt = errors.New("boot assets not built")

// Open reads the boot assets in dir; a directory without a manifest (never
// built, or from before images) is ErrNotBuilt, naming the command that
// builds it.
func Open(dir string) (*Assets, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (%s)", ErrNotBuilt, dir, BuildCommand(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("boot assets: %w", err)
	}
	a := &Assets{Dir: dir}
	if err := json.Unmarshal(b, &a.Manifest); err != nil {
		return nil, fmt.Errorf("boot assets: %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if a.Release == "" || strings.ContainsAny(a.Release, `/\`) || a.Release == "." || a.Release == ".." {
		return nil, fmt.Errorf("boot assets: %s: bad kernel release %q", filepath.Join(dir, ManifestFile), a.Release)
	}
	return a, nil
}

// BuildCommand says how to build the boot assets into dir: with make in
// the source tree (into ./var/boot), or with the CLI.
func BuildCommand(dir string) string {
	return "make boot-assets, or attestation images boot-assets --agent bin/attestation-agent --out " + dir
}

// Path is the path of one of the directory's files.
func (a *Assets) Path(name string) string { return filepath.Join(a.Dir, name) }

// Index is the kernel's module index (modules.dep, modules.builtin): it
// resolves module names, without the module files.
func (a *Assets) Index() (*initramfs.Kernel, error) {
	return initramfs.OpenKernel(filepath.Join(a.Dir, "modules", a.Release))
}

// ModuleTree makes a module tree under work holding the files of the named
// modules and their dependencies, taken from the kernel package, except
// those in have (files relative to the module tree, as in
// Manifest.ModulesResolved), and opens it: what initramfs.Write needs to
// carry them.
func (a *Assets) ModuleTree(ctx context.Context, work string, have []string, names ...string) (*initramfs.Kernel, error) {
	idx, err := a.Index()
	if err != nil {
		return nil, err
	}
	all, err := idx.Resolve(names...)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, f := range all {
		if !slices.Contains(have, f) {
			files = append(files, f)
		}
	}
	dir := filepath.Join(work, a.Release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"modules.dep", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(idx.Dir, name))
		if err != nil && !(name == "modules.builtin" && errors.Is(err, fs.ErrNotExist)) {
			return nil, fmt.Errorf("boot assets: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	if err := a.extract(ctx, dir, files); err != nil {
		return nil, err
	}
	return initramfs.OpenKernel(dir)
}

// extract writes the module files (relative to the module tree) from the
// kernel package into dir.
func (a *Assets) extract(ctx context.Context, dir string, files []string) error {
	if len(files) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, f := range files {
		want[path.Join("lib/modules", a.Release, f)] = true
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", a.Path(KernelDeb))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// dpkg-deb pipes through a decompressor of its own, which holds
	// stderr open: never wait on it for long.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("boot assets: dpkg-deb --fsys-tarfile: %w", err)
	}
	tr := tar.NewReader(out)
	found := 0
	var readErr error
	for found < len(want) {
		h, err := tr.Next()
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		name := strings.TrimPrefix(h.Name, "./")
		if !want[name] || h.Typeflag != tar.TypeReg {
			continue
		}
		rel := strings.TrimPrefix(name, path.Join("lib/modules", a.Release)+"/")
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			readErr = err
			break
		}
		f, err := os.Create(dst)
		if err == nil {
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			readErr = err
			break
		}
		found++
	}
	// Done reading: the rest of the archive is not needed. Closing the
	// pipe ends the decompressor writing into it (EPIPE), then dpkg-deb.
	out.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if readErr != nil {
		return fmt.Errorf("boot assets: read %s: %v %s", a.Path(KernelDeb), readErr, stderr.String())
	}
	if found < len(want) {
		return fmt.Errorf("boot assets: %s holds %d of the %d module files modules.dep names", a.Path(KernelDeb), found, len(want))
	}
	return nil
}
