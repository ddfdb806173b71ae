// Package builder builds attestationd and attestation with extensions from
// other modules, as caddy's xcaddy does: it writes a module whose mains are
// the product's own with one more blank import per extension, pins every
// module in that module's go.mod, and runs go build.
//
// The product is built from a checkout of this repository: its own replace
// directives (third_party/go-diskfs) apply only when it is the main
// module, so the generated go.mod carries each of them, rewritten to
// absolute paths, beside a replace of the product itself.
package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/format"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Module is the path of the product's module.
const Module = "github.com/attestation/attestation"

// mains are the product's commands the builder builds, by their directory
// in the checkout; the generated module has them under cmd/.
var mains = []string{"controlplane/cmd/attestationd", "cli/cmd/attestation"}

// listMarker is the import, present in every main, after which the
// extensions' imports go: the extensions that ship come first.
const listMarker = `"` + Module + `/extensions/all"`

// unversioned is the version a module required only to be replaced gets.
const unversioned = "v0.0.0-00010101000000-000000000000"

// Options say what to build.
type Options struct {
	// With are the extensions to add, each a package path with an
	// optional @version ("github.com/acme/attestation-cmdb@v1.2.0"; none:
	// the latest), or a local directory inside a module ("./cmdb",
	// "../acme/cmdb/ext"), which becomes a replace.
	With []string
	// Output is the directory the binaries are written to.
	Output string
	// Source is the checkout of attestation to build.
	Source string
	// Version is stamped into the binaries for --version; empty: `git
	// describe --tags --always --dirty` of Source, when it says anything.
	Version string
	// WorkDir keeps the generated module there (created if missing; it
	// must not hold one already) instead of in a temporary directory.
	WorkDir string
	// Log receives go's output and the builder's progress; nil: discarded.
	Log io.Writer
}

// Extension is one module added to the build, as the generated go.mod
// pins it.
type Extension struct {
	// Package is the package the mains import.
	Package string
	// Module is the module that holds it and Version the version pinned;
	// Replace is the local directory it is built from, if any.
	Module, Version, Replace string
}

// Result says what was built.
type Result struct {
	// Binaries are the paths of the built programs.
	Binaries []string
	// Version is the version stamped into them.
	Version string
	// Extensions are the added modules, in the order given.
	Extensions []Extension
	// GoMod is the generated go.mod.
	GoMod string
}

// Build writes the module and builds the binaries.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Output == "" {
		return nil, errors.New("no output directory")
	}
	src, err := filepath.Abs(o.Source)
	if err != nil {
		return nil, err
	}
	product, err := readGoMod(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("read the checkout of attestation: %w", err)
	}
	if product.Module.Path != Module {
		return nil, fmt.Errorf("%s is the module %s, not %s: give the checkout of attestation", src, product.Module.Path, Module)
	}
	exts := make([]Extension, 0, len(o.With))
	for _, w := range o.With {
		e, err := parseWith(ctx, w)
		if err != nil {
			return nil, fmt.Errorf("--with %s: %w", w, err)
		}
		exts = append(exts, e)
	}
	work := o.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "attestation-build-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	} else if _, err := os.Stat(filepath.Join(work, "go.mod")); err == nil {
		return nil, fmt.Errorf("%s already holds a module", work)
	}
	if err := write(src, work, product, exts); err != nil {
		return nil, fmt.Errorf("write the module: %w", err)
	}
	gocmd := func(args ...string) error {
		fmt.Fprintf(o.Log, "go %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = work
		// -mod=mod: go.mod and go.sum are written as the build resolves
		// them; GOWORK=off: a workspace around WorkDir plays no part.
		cmd.Env = append(os.Environ(), "GOFLAGS="+os.Getenv("GOFLAGS")+" -mod=mod", "GOWORK=off", "CGO_ENABLED=1")
		cmd.Stdout, cmd.Stderr = o.Log, o.Log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w", args[0], err)
		}
		return nil
	}
	for _, e := range exts {
		if e.Replace == "" {
			if err := gocmd("get", e.Package+"@"+e.Version); err != nil {
				return nil, err
			}
		}
	}
	if err := gocmd("mod", "tidy"); err != nil {
		return nil, err
	}
	ver := o.Version
	if ver == "" {
		ver = describe(ctx, src)
	}
	out, err := filepath.Abs(o.Output)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	args := []string{"build", "-o", out + string(filepath.Separator)}
	if ver != "" {
		args = append(args, "-ldflags=-X "+Module+"/internal/version.Version="+ver)
	}
	res := &Result{Version: ver}
	for _, m := range mains {
		args = append(args, "./cmd/"+filepath.Base(m))
		res.Binaries = append(res.Binaries, filepath.Join(out, filepath.Base(m)))
	}
	if err := gocmd(args...); err != nil {
		return nil, err
	}
	built, err := readGoMod(ctx, work)
	if err != nil {
		return nil, err
	}
	for _, e := range exts {
		e.Module, e.Version = resolve(built, e)
		res.Extensions = append(res.Extensions, e)
	}
	b, err := os.ReadFile(filepath.Join(work, "go.mod"))
	if err != nil {
		return nil, err
	}
	res.GoMod = string(b)
	return res, nil
}

// goMod is what `go mod edit -json` prints.
type goMod struct {
	Module  struct{ Path string }
	Go      string
	Require []struct{ Path, Version string }
	Replace []struct {
		Old struct{ Path, Version string }
		New struct{ Path, Version string }
	}
}

func readGoMod(ctx context.Context, dir string) (*goMod, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "edit", "-json")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go mod edit -json in %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	var m goMod
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("go mod edit -json in %s: %w", dir, err)
	}
	return &m, nil
}

// parseWith reads one --with: a local directory when it is a path ("./x",
// "../x", "/x"), else a package path with an optional @version.
func parseWith(ctx context.Context, w string) (Extension, error) {
	if w == "." || w == ".." || strings.HasPrefix(w, "./") || strings.HasPrefix(w, "../") || filepath.IsAbs(w) {
		dir, err := filepath.Abs(w)
		if err != nil {
			return Extension{}, err
		}
		root, err := moduleRoot(dir)
		if err != nil {
			return Extension{}, err
		}
		m, err := readGoMod(ctx, root)
		if err != nil {
			return Extension{}, err
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return Extension{}, err
		}
		pkg := m.Module.Path
		if rel != "." {
			pkg += "/" + filepath.ToSlash(rel)
		}
		return Extension{Package: pkg, Module: m.Module.Path, Version: unversioned, Replace: root}, nil
	}
	pkg, ver, _ := strings.Cut(w, "@")
	if pkg == "" || strings.ContainsAny(pkg, " \t") {
		return Extension{}, errors.New("want a package path with an optional @version, or a directory starting with ./, ../ or /")
	}
	if ver == "" {
		ver = "latest"
	}
	return Extension{Package: pkg, Version: ver}, nil
}

// moduleRoot is the directory of the go.mod that holds dir.
func moduleRoot(dir string) (string, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is in no Go module (no go.mod in it or above it)", dir)
		}
	}
}

// write writes the module into work: go.mod, go.sum and the mains.
func write(src, work string, product *goMod, exts []Extension) error {
	var mod strings.Builder
	fmt.Fprintf(&mod, "// Generated by attestation-build: attestation's binaries with more extensions.\nmodule attestationbuild\n\ngo %s\n\n", product.Go)
	fmt.Fprintf(&mod, "require %s %s\n", Module, unversioned)
	for _, e := range exts {
		if e.Replace != "" {
			fmt.Fprintf(&mod, "require %s %s\n", e.Module, unversioned)
		}
	}
	fmt.Fprintf(&mod, "\nreplace %s => %s\n", Module, modPath(src))
	// The product's own replaces, which Go applies only in the main
	// module, with relative paths made absolute; a local extension
	// replaces a module of the same path itself.
	local := map[string]bool{}
	for _, e := range exts {
		if e.Replace != "" {
			local[e.Module] = true
		}
	}
	for _, r := range product.Replace {
		if local[r.Old.Path] {
			continue
		}
		old := r.Old.Path
		if r.Old.Version != "" {
			old += " " + r.Old.Version
		}
		repl := r.New.Path
		if r.New.Version != "" {
			repl += " " + r.New.Version
		} else {
			if !filepath.IsAbs(repl) {
				repl = filepath.Join(src, repl)
			}
			repl = modPath(repl)
		}
		fmt.Fprintf(&mod, "replace %s => %s\n", old, repl)
	}
	for _, e := range exts {
		if e.Replace != "" {
			fmt.Fprintf(&mod, "replace %s => %s\n", e.Module, modPath(e.Replace))
		}
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return err
	}
	// The product's checksums: what it requires resolves without the
	// checksum database.
	sum, err := os.ReadFile(filepath.Join(src, "go.sum"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "go.sum"), sum, 0o644); err != nil {
		return err
	}
	for _, m := range mains {
		b, err := os.ReadFile(filepath.Join(src, m, "main.go"))
		if err != nil {
			return err
		}
		b, err = withImports(b, exts)
		if err != nil {
			return fmt.Errorf("%s/main.go: %w", m, err)
		}
		dir := filepath.Join(work, "cmd", filepath.Base(m))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// modPath is a directory as go.mod writes it: quoted when it holds white
// space or a quote, which would end it unquoted.
func modPath(dir string) string {
	if strings.ContainsAny(dir, " \t\"'`\\") {
		return strconv.Quote(dir)
	}
	return dir
}

// withImports is the product's main with a blank import of each extension
// after the list of the extensions that ship, marked as generated.
func withImports(main []byte, exts []Extension) ([]byte, error) {
	lines := strings.SplitAfter(string(main), "\n")
	var b strings.Builder
	b.WriteString("// Code generated by attestation-build from attestation's main.go. DO NOT EDIT.\n\n")
	found := false
	for _, l := range lines {
		b.WriteString(l)
		if !found && strings.Contains(l, listMarker) {
			found = true
			b.WriteString("\n") // a group of their own, after the list
			for _, e := range exts {
				fmt.Fprintf(&b, "\t_ %q // added by attestation-build\n", e.Package)
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("no import of %s to add the extensions after", listMarker)
	}
	return format.Source([]byte(b.String()))
}

// resolve is the module and version the built go.mod pins for e.
func resolve(m *goMod, e Extension) (module, version string) {
	if e.Replace != "" {
		return e.Module, ""
	}
	// The longest required module path the package is in.
	for _, r := range m.Require {
		if (e.Package == r.Path || strings.HasPrefix(e.Package, r.Path+"/")) && len(r.Path) > len(module) {
			module, version = r.Path, r.Version
		}
	}
	return module, version
}

// describe is `git describe --tags --always --dirty` in dir, or "".
func describe(ctx context.Context, dir string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// FindSource is the checkout of attestation that holds dir, found by
// walking up to a go.mod of the module Module.
func FindSource(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && modulePath(b) == Module {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is not in a checkout of %s", dir, Module)
		}
	}
}

// modulePath is the module line of a go.mod file.
func modulePath(gomod []byte) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			return strings.Trim(strings.TrimSpace(p), `"`)
		}
	}
	return ""
}
