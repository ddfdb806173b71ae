package sysinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ModuleIndex is what a module tree says of its modules: the device
// aliases each driver binds (modules.alias) and the modules each needs
// (modules.dep). The agent's initramfs carries both, for its modules only.
type ModuleIndex struct {
	// aliases maps a module name to its modalias patterns.
	aliases map[string][]string
	// deps maps a module name to the names of the modules it needs.
	deps map[string][]string
}

// ParseModuleIndex reads modules.alias ("alias PATTERN MODULE" lines) and
// modules.dep ("FILE: FILE...") texts.
func ParseModuleIndex(alias, dep string) *ModuleIndex {
	x := &ModuleIndex{aliases: map[string][]string{}, deps: map[string][]string{}}
	for line := range strings.Lines(alias) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "alias" {
			name := canonical(f[2])
			x.aliases[name] = append(x.aliases[name], f[1])
		}
	}
	for line := range strings.Lines(dep) {
		mod, needs, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := moduleFileName(strings.TrimSpace(mod))
		for _, d := range strings.Fields(needs) {
			x.deps[name] = append(x.deps[name], moduleFileName(d))
		}
	}
	return x
}

// ReadModuleIndex reads the index of the module tree dir; an error
// wrapping fs.ErrNotExist means it has no modules.alias (an initramfs
// built before the agent chose its modules by device).
func ReadModuleIndex(dir string) (*ModuleIndex, error) {
	alias, err := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w", err)
	}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("module index: %w", err)
	}
	return ParseModuleIndex(string(alias), string(dep)), nil
}

// moduleFileName is the module name of a module file's path.
func moduleFileName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return canonical(base)
}

// Needed returns, of mods and in their order, the modules this machine
// needs, given the modaliases of its devices: every driver with an alias
// that one of them matches, every module without aliases that no other of
// mods needs (not a device driver: it is loaded because it is listed),
// and what those need. The drivers of devices the machine lacks, and what
// only they need, are left out.
func (x *ModuleIndex) Needed(mods []Module, modaliases []string) []Module {
	listed := map[string]bool{}
	neededByOther := map[string]bool{}
	for _, m := range mods {
		listed[canonical(m.Name)] = true
	}
	for name := range listed {
		for _, d := range x.deps[name] {
			neededByOther[d] = true
		}
	}
	want := map[string]bool{}
	var add func(name string)
	add = func(name string) {
		if want[name] {
			return
		}
		want[name] = true
		for _, d := range x.deps[name] {
			add(d)
		}
	}
	for name := range listed {
		patterns, driver := x.aliases[name]
		switch {
		case !driver && !neededByOther[name]:
			add(name)
		case driver && matchesAny(patterns, modaliases):
			add(name)
		}
	}
	var out []Module
	for _, m := range mods {
		if want[canonical(m.Name)] {
			out = append(out, m)
		}
	}
	return out
}

// matchesAny reports whether one of the modalias patterns (shell patterns,
// as the kernel's modules.alias has them) matches one of the modaliases.
func matchesAny(patterns, modaliases []string) bool {
	for _, p := range patterns {
		for _, a := range modaliases {
			if ok, _ := path.Match(p, a); ok {
				return true
			}
		}
	}
	return false
}

// DeviceModaliases returns the modaliases of the devices on every bus
// under sysRoot ("/" on a machine): /sys/bus/*/devices/*/modalias.
func DeviceModaliases(sysRoot string) []string {
	files, _ := filepath.Glob(filepath.Join(sysRoot, "sys/bus/*/devices/*/modalias"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if a := strings.TrimSpace(string(b)); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// LoadForDevices loads, of mods and in their order, the modules the
// machine's devices need (ModuleIndex.Needed with the index of dir, the
// module tree; /lib/modules/RELEASE when empty), looking at the devices
// again after each round, since a driver can bring new devices (virtio_pci
// the virtio devices virtio_net binds). It returns what it loaded and
// the modules it did not. Without an index in dir it returns an error
// wrapping fs.ErrNotExist and loads nothing.
func LoadForDevices(dir, sysRoot string, mods []Module) (loaded []Loaded, rest []Module, err error) {
	if dir == "" {
		if dir, err = ModulesDir(); err != nil {
			return nil, nil, err
		}
	}
	x, err := ReadModuleIndex(dir)
	if err != nil {
		return nil, nil, err
	}
	done := map[string]bool{}
	// Each round loads at least one module, so len(mods) rounds at most.
	for range len(mods) {
		var next []Module
		for _, m := range x.Needed(mods, DeviceModaliases(sysRoot)) {
			if !done[canonical(m.Name)] {
				next = append(next, m)
				done[canonical(m.Name)] = true
			}
		}
		if len(next) == 0 {
			break
		}
		l, err := LoadModules(dir, next)
		loaded = append(loaded, l...)
		if err != nil {
			return loaded, nil, err
		}
	}
	for _, m := range mods {
		if !done[canonical(m.Name)] {
			rest = append(rest, m)
		}
	}
	return loaded, rest, nil
}
