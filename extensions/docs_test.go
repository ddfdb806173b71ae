package extensions_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/attestation/attestation/extensions/builder"
)

var fileMarker = regexp.MustCompile(`^(?://|--) file: (\S+)$`)

// snippets returns the files named by "// file: PATH" (or "-- file:")
// first lines of the fenced code blocks of a Markdown document.
func snippets(t *testing.T, doc string) map[string]string {
	t.Helper()
	f, err := os.Open(doc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]string{}
	var (
		in   bool
		name string
		body strings.Builder
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.HasPrefix(line, "```"):
			in, name = true, ""
			body.Reset()
		case in && line == "```":
			in = false
			if name != "" {
				files[name] = body.String()
			}
		case in && name == "" && body.Len() == 0 && fileMarker.MatchString(line):
			name = fileMarker.FindStringSubmatch(line)[1]
		case in:
			body.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestExtensionsGuide builds the guide's example as a third party would:
// a module of its own (the guide's go.mod, with this checkout for
// ../attestation) requiring this one, its extension, its test and its two
// mains; then runs its test, and builds the binaries again with
// attestation-build from the module's directory, as the guide does.
func TestExtensionsGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and tests a separate module; skipped with -short")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := snippets(t, filepath.Join(repo, "docs", "extensions.md"))
	for _, want := range []string{"go.mod", "history/history.go", "history/history_test.go", "history/migrations/0001_create_log.sql", "cmd/attestationd/main.go", "cmd/attestation/main.go"} {
		if _, ok := files[want]; !ok {
			t.Fatalf("docs/extensions.md has no snippet for %s (found %d snippets)", want, len(files))
		}
	}
	dir := t.TempDir()
	for _, dep := range []string{"go-diskfs", "pin-tftp"} {
		if !strings.Contains(files["go.mod"], "=> ../attestation/third_party/"+dep+"\n") {
			t.Fatalf("the guide's go.mod does not carry attestation's replace of %s:\n%s", dep, files["go.mod"])
		}
	}
	files["go.mod"] = strings.ReplaceAll(files["go.mod"], "=> ../attestation", "=> "+repo)
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	files["go.sum"] = string(sum)
	for name, body := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("go %s: ok\n%s", strings.Join(args, " "), out)
	}
	run("mod", "tidy")
	run("vet", "./...")
	run("build", "-o", dir+"/bin/", "./cmd/attestationd", "./cmd/attestation")
	run("test", "-count=1", "./...")
	out, err := exec.Command(filepath.Join(dir, "bin", "attestation"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "history") {
		t.Fatalf("the built CLI's help does not list the history command group: %v\n%s", err, out)
	}

	var log strings.Builder
	res, err := builder.Build(context.Background(), builder.Options{
		With: []string{filepath.Join(dir, "history")}, Source: repo, Output: filepath.Join(dir, "custom"), Log: &log,
	})
	if err != nil {
		t.Fatalf("attestation-build --with history: %v\n%s", err, log.String())
	}
	for _, bin := range res.Binaries {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "extensions: history v0.1.0, tags v") {
			t.Errorf("%s --version: %v\n%s\nwant history v0.1.0 among the extensions", filepath.Base(bin), err, out)
		}
	}
}
