package sysinit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ModulesFile lists kernel modules baked into the initramfs, one a line in
// load order: a name (or a path to the .ko file) and optional parameters;
// '#' starts a comment. attestation.modules= on the command line replaces it.
const ModulesFile = "/etc/attestation/modules"

// Module is one kernel module to load.
type Module struct {
	// Name is a module name (e1000, virtio_net) or a path to its file.
	Name string
	// Params are its parameters, as for modprobe ("debug=1 foo=bar").
	Params string
}

// ParseModuleList parses the command line form: names separated by commas.
func ParseModuleList(list string) []Module {
	var mods []Module
	for name := range strings.SplitSeq(list, ",") {
		if name = strings.TrimSpace(name); name != "" {
			mods = append(mods, Module{Name: name})
		}
	}
	return mods
}

// ParseModules parses the ModulesFile form.
func ParseModules(text string) []Module {
	var mods []Module
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		mods = append(mods, Module{Name: f[0], Params: strings.Join(f[1:], " ")})
	}
	return mods
}

// ReadModules returns the modules listed in file, or none when it does not
// exist.
func ReadModules(file string) ([]Module, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read module list: %w", err)
	}
	return ParseModules(string(b)), nil
}

// moduleSuffixes are the module file names tried, and the finit_module
// flags each needs (the kernel decompresses when built to).
var moduleSuffixes = []struct {
	suffix string
	flags  int
}{
	{".ko", 0},
	{".ko.xz", unix.MODULE_INIT_COMPRESSED_FILE},
	{".ko.zst", unix.MODULE_INIT_COMPRESSED_FILE},
	{".ko.gz", unix.MODULE_INIT_COMPRESSED_FILE},
}

// canonical makes module names comparable: the kernel treats '-' and '_'
// alike.
func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// IndexModules maps module names to their files in fsys (a
// /lib/modules/RELEASE tree), with the finit_module flags each needs.
func IndexModules(fsys fs.FS) (map[string]ModuleFile, error) {
	index := map[string]ModuleFile{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := path.Base(p)
		for _, s := range moduleSuffixes {
			if name, ok := strings.CutSuffix(base, s.suffix); ok {
				if _, dup := index[canonical(name)]; !dup {
					index[canonical(name)] = ModuleFile{Path: p, Flags: s.flags}
				}
				break
			}
		}
		return nil
	})
	return index, err
}

// ModuleFile is a module's file and how to load it.
type ModuleFile struct {
	Path  string
	Flags int
}

// Loaded reports what LoadModules did with one module.
type Loaded struct {
	Module Module
	// Path is the file loaded ("" when built in or not found).
	Path string
	// Already is true when the kernel had it (built in or loaded before).
	Already bool
	Err     error
}

// LoadModules loads mods in order from dir (/lib/modules/RELEASE when
// empty). A module the kernel already has counts as loaded; one that fails
// does not stop the others, since the NIC that matters may still come up.
func LoadModules(dir string, mods []Module) ([]Loaded, error) {
	if len(mods) == 0 {
		return nil, nil
	}
	if dir == "" {
		var err error
		if dir, err = ModulesDir(); err != nil {
			return nil, err
		}
	}
	index, err := IndexModules(os.DirFS(dir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list modules in %s: %w", dir, err)
	}
	var out []Loaded
	for _, m := range mods {
		l := Loaded{Module: m}
		var file ModuleFile
		if strings.Contains(m.Name, "/") {
			file = ModuleFile{Path: m.Name}
			for _, s := range moduleSuffixes {
				if strings.HasSuffix(m.Name, s.suffix) {
					file.Flags = s.flags
				}
			}
		} else if f, ok := index[canonical(m.Name)]; ok {
			file = ModuleFile{Path: filepath.Join(dir, f.Path), Flags: f.Flags}
		} else if builtin(m.Name) {
			l.Already = true
			out = append(out, l)
			continue
		} else {
			l.Err = fmt.Errorf("module %s: not found in %s", m.Name, dir)
			out = append(out, l)
			continue
		}
		l.Path = file.Path
		l.Already, l.Err = finitModule(file, m.Params)
		out = append(out, l)
	}
	return out, nil
}

// ModulesDir is the running kernel's module tree, /lib/modules/RELEASE.
func ModulesDir() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])), nil
}

// builtin reports whether the running kernel has the module already,
// built in or loaded.
func builtin(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/module", canonical(name)))
	return err == nil
}

func finitModule(f ModuleFile, params string) (already bool, err error) {
	fd, err := unix.Open(f.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open module %s: %w", f.Path, err)
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, params, f.Flags)
	if errors.Is(err, unix.EEXIST) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("load module %s: %w", f.Path, err)
	}
	return false, nil
}
