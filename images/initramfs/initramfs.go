// Package initramfs builds the agent's initramfs: a gzip-compressed newc
// cpio archive with the static agent as /init, /dev/console, the directory
// skeleton, the kernel modules asked for with their dependencies (from
// modules.dep), the module list the agent loads in order, the part of the
// kernel's modules.dep and modules.alias that concerns them (the agent
// loads only the drivers of devices the machine has), and extra files
// (the agent's settings, its CA). The same inputs give the same bytes:
// entries are sorted, owned by root, dated 1970, numbered in order.
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// ModulesFile is where the module list goes, as the agent reads it
// (agent/sysinit.ModulesFile without the leading slash).
const ModulesFile = "etc/attestation/modules"

// File is an extra file of the initramfs.
type File struct {
	Data []byte
	Mode os.FileMode // permission bits; 0 means 0644
}

// Spec is what goes into an initramfs.
type Spec struct {
	// Agent is the static agent binary, installed as /init.
	Agent []byte
	// Modules are kernel modules, in load order; their dependencies are
	// added before them. They need a Kernel.
	Modules []string
	// Kernel is where the modules come from (nil: no modules).
	Kernel *Kernel
	// Files are extra files by path (relative, slash-separated, no ..).
	Files map[string]File
	// Overlay makes an archive to append to a full initramfs instead:
	// the kernel unpacks concatenated archives in order, a later file
	// replacing an earlier one. It has no /init (Agent stays empty), no
	// /dev/console, and leaves out the module files in Have (relative to
	// the kernel's module tree) that the full one carries, while its
	// module list names every module, in load order.
	Overlay bool
	Have    []string
}

// skeleton is the directory tree every initramfs has.
var skeleton = []string{"dev", "etc", "etc/attestation", "proc", "run", "sys", "tmp"}

// Write writes the initramfs of s to w, gzip-compressed.
func Write(w io.Writer, s Spec) error {
	files := map[string]File{}
	switch {
	case s.Overlay && len(s.Agent) > 0:
		return errors.New("initramfs: an overlay carries no agent: the initramfs it is appended to has /init")
	case !s.Overlay && len(s.Agent) == 0:
		return errors.New("initramfs: no agent binary for /init")
	case !s.Overlay:
		files["init"] = File{Data: s.Agent, Mode: 0o755}
	}
	if len(s.Modules) > 0 {
		if s.Kernel == nil {
			return errors.New("initramfs: modules asked for without a kernel to take them from")
		}
		order, err := s.Kernel.Resolve(s.Modules...)
		if err != nil {
			return err
		}
		var list strings.Builder
		list.WriteString("# kernel modules, in load order (dependencies first)\n")
		for _, rel := range order {
			list.WriteString(moduleName(rel) + "\n")
			if s.Overlay && slices.Contains(s.Have, rel) {
				continue
			}
			b, err := os.ReadFile(filepath.Join(s.Kernel.Dir, filepath.FromSlash(rel)))
			if err != nil {
				return fmt.Errorf("initramfs: read module: %w", err)
			}
			files[path.Join("lib/modules", s.Kernel.Release, rel)] = File{Data: b, Mode: 0o644}
		}
		files[ModulesFile] = File{Data: []byte(list.String()), Mode: 0o644}
		// The module tree's own index, cut down to these modules: the
		// agent matches the devices' modaliases against the aliases.
		// An overlay's replaces the full one's: it names every module.
		tree := path.Join("lib/modules", s.Kernel.Release)
		files[path.Join(tree, "modules.dep")] = File{Data: s.Kernel.depOf(order), Mode: 0o644}
		aliases, err := s.Kernel.aliasesOf(order)
		if err != nil {
			return err
		}
		if aliases != nil {
			files[path.Join(tree, "modules.alias")] = File{Data: aliases, Mode: 0o644}
		}
	}
	for p, f := range s.Files {
		clean := path.Clean(p)
		if p == "" || path.IsAbs(p) || clean != p || clean == "." || strings.HasPrefix(clean, "../") || clean == ".." {
			return fmt.Errorf("initramfs: file path %q: want a clean relative path inside the image", p)
		}
		if clean == "init" || clean == ModulesFile {
			return fmt.Errorf("initramfs: file path %q: the builder writes that file itself", p)
		}
		files[clean] = f
	}

	dirs := map[string]bool{}
	if !s.Overlay {
		for _, d := range skeleton {
			dirs[d] = true
		}
	}
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var records []cpio.Record
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		records = append(records, cpio.Directory(d, 0o755))
	}
	if !s.Overlay {
		records = append(records, cpio.CharDev("dev/console", 0o600, 5, 1))
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		mode := uint64(f.Mode.Perm())
		if mode == 0 {
			mode = 0o644
		}
		records = append(records, cpio.StaticRecord(f.Data, cpio.Info{Name: p, Mode: cpio.S_IFREG | mode}))
	}
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	cw := cpio.Newc.Writer(zw)
	for i, r := range records {
		// Numbered in order, one link each: nothing the kernel could
		// take for a hard link, and the same numbers every build.
		r.Ino, r.NLink = uint64(i+1), 1
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return zw.Close()
}

// depOf is the modules.dep of the module files order: each with the files
// it needs, in modules.dep's form.
func (k *Kernel) depOf(order []string) []byte {
	var b bytes.Buffer
	for _, rel := range order {
		fmt.Fprintf(&b, "%s:", rel)
		for _, d := range k.deps[rel] {
			fmt.Fprintf(&b, " %s", d)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// aliasesOf is the lines of the kernel's modules.alias that name one of
// the module files order, or nil when the kernel has no modules.alias
// (then the agent loads every module listed, as it always did).
func (k *Kernel) aliasesOf(order []string) ([]byte, error) {
	f, err := os.Open(filepath.Join(k.Dir, "modules.alias"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	want := map[string]bool{}
	for _, rel := range order {
		want[moduleName(rel)] = true
	}
	var b bytes.Buffer
	b.WriteString("# Aliases extracted from modules.alias\n")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "alias PATTERN MODULE"
		if w := strings.Fields(sc.Text()); len(w) == 3 && w[0] == "alias" && want[strings.ReplaceAll(w[2], "-", "_")] {
			b.WriteString(sc.Text() + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel modules: %s: %w", f.Name(), err)
	}
	return b.Bytes(), nil
}

// moduleName is the module name of a file: kernel/drivers/net/virtio_net.ko
// is virtio_net, and the kernel takes '-' for '_'.
func moduleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// Kernel is the module tree of one kernel: /lib/modules/RELEASE.
type Kernel struct {
	Release string
	Dir     string
	// deps maps a module file (relative to Dir) to the files it needs.
	deps map[string][]string
	// byName maps a module name to its file.
	byName map[string]string
	// builtin holds the names of the modules built into the kernel.
	builtin map[string]bool
}

// OpenKernel reads the modules.dep of the kernel whose module tree is dir
// (/lib/modules/RELEASE; the release is its base name).
func OpenKernel(dir string) (*Kernel, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	k := &Kernel{Release: filepath.Base(dir), Dir: dir, deps: map[string][]string{}, byName: map[string]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || mod == "" {
			return nil, fmt.Errorf("kernel modules: %s line %d: want \"module.ko: dependencies\", got %q", f.Name(), n, line)
		}
		k.deps[mod] = strings.Fields(deps)
		k.byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	k.builtin = map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			k.builtin[moduleName(line)] = true
		}
	}
	return k, nil
}

// Resolve returns the files of the named modules and of everything they
// depend on, each once, dependencies before the modules that need them:
// the order to load them in. A module built into the kernel needs no file.
func (k *Kernel) Resolve(names ...string) ([]string, error) {
	var (
		order []string
		state = map[string]int{} // 1: being visited, 2: done
		visit func(mod, from string) error
	)
	visit = func(mod, from string) error {
		switch state[mod] {
		case 1:
			return fmt.Errorf("kernel modules: %s and %s depend on each other", mod, from)
		case 2:
			return nil
		}
		state[mod] = 1
		deps, ok := k.deps[mod]
		if !ok {
			return fmt.Errorf("kernel modules: %s needs %s, which modules.dep does not list", from, mod)
		}
		for _, d := range deps {
			if err := visit(d, mod); err != nil {
				return err
			}
		}
		state[mod] = 2
		order = append(order, mod)
		return nil
	}
	for _, name := range names {
		mod, ok := k.byName[strings.ReplaceAll(name, "-", "_")]
		if !ok && k.builtin[strings.ReplaceAll(name, "-", "_")] {
			continue
		}
		if !ok {
			return nil, fmt.Errorf("kernel modules: no module %q in %s (built in, or not a module of this kernel?)", name, k.Dir)
		}
		if err := visit(mod, name); err != nil {
			return nil, err
		}
	}
	return order, nil
}
