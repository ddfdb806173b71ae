package builder

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteQuotesPaths: a checkout, a relative replace of it and a local
// extension in directories whose names have a space still make a go.mod
// Go reads, each replace naming its directory.
func TestWriteQuotesPaths(t *testing.T) {
	src := filepath.Join(t.TempDir(), "my checkout")
	for _, m := range mains {
		dir := filepath.Join(src, m)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		main := "package main\n\nimport (\n\t_ " + listMarker + "\n)\n\nfunc main() {}\n"
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "go.sum"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	product := &goMod{Go: "1.26"}
	product.Replace = append(product.Replace, struct {
		Old struct{ Path, Version string }
		New struct{ Path, Version string }
	}{})
	product.Replace[0].Old.Path, product.Replace[0].New.Path = "example.com/patched", "./third party/patched"
	ext := Extension{Module: "example.com/ext", Package: "example.com/ext", Replace: filepath.Join(t.TempDir(), "my ext")}
	work := t.TempDir()
	if err := write(src, work, product, []Extension{ext}); err != nil {
		t.Fatal(err)
	}
	got, err := readGoMod(t.Context(), work)
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(work, "go.mod"))
		t.Fatalf("%v\n%s", err, b)
	}
	want := map[string]string{
		Module:                src,
		"example.com/patched": filepath.Join(src, "third party/patched"),
		"example.com/ext":     ext.Replace,
	}
	for _, r := range got.Replace {
		if want[r.Old.Path] != r.New.Path {
			t.Errorf("replace %s => %q, want %q", r.Old.Path, r.New.Path, want[r.Old.Path])
		}
		delete(want, r.Old.Path)
	}
	if len(want) > 0 {
		t.Errorf("no replace of %v", want)
	}
}
