package builder_test

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/extensions/builder"
	"github.com/attestation/attestation/internal/proctest"
)

// TestBuild builds the binaries with two extensions from modules of their
// own: cmdb from a copy in a temporary directory (a replace), rack at
// v0.3.0 from a module proxy the test serves from files. Both binaries
// must carry both, beside the extensions that ship, and the daemon must
// run them.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds attestationd and attestation in a generated module")
	}
	src, err := builder.FindSource(".")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cmdb := filepath.Join(tmp, "cmdb")
	copyDir(t, filepath.Join("testdata", "cmdb"), cmdb)
	proxy := filepath.Join(tmp, "proxy")
	serveModule(t, proxy, "example.com/rack", "v0.3.0", filepath.Join("testdata", "rack"))
	t.Setenv("GOPROXY", "file://"+proxy+","+goEnv(t, "GOPROXY"))
	t.Setenv("GONOSUMDB", "example.com")

	var log strings.Builder
	res, err := builder.Build(context.Background(), builder.Options{
		With:    []string{cmdb, "example.com/rack/extension@v0.3.0"},
		Output:  filepath.Join(tmp, "bin"),
		Source:  src,
		Version: "v9.9.9-custom",
		WorkDir: filepath.Join(tmp, "work"),
		Log:     &log,
	})
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	want := []builder.Extension{
		{Package: "example.com/attestation-cmdb", Module: "example.com/attestation-cmdb", Replace: cmdb},
		{Package: "example.com/rack/extension", Module: "example.com/rack", Version: "v0.3.0"},
	}
	if len(res.Extensions) != len(want) {
		t.Fatalf("Extensions %+v, want %+v", res.Extensions, want)
	}
	for i := range want {
		if res.Extensions[i] != want[i] {
			t.Errorf("Extensions[%d] = %+v, want %+v", i, res.Extensions[i], want[i])
		}
	}
	for _, line := range []string{
		"example.com/rack v0.3.0",
		"replace github.com/attestation/attestation => " + src,
		"replace github.com/diskfs/go-diskfs => " + filepath.Join(src, "third_party", "go-diskfs"),
		"replace example.com/attestation-cmdb => " + cmdb,
	} {
		if !strings.Contains(res.GoMod, line) {
			t.Errorf("the generated go.mod lacks %q:\n%s", line, res.GoMod)
		}
	}

	daemon, cli := filepath.Join(tmp, "bin", "attestationd"), filepath.Join(tmp, "bin", "attestation")
	exts := "extensions: cmdb v1.2.0, rack v0.3.0, tags v"
	for _, bin := range []string{daemon, cli} {
		out := run(t, nil, bin, "--version")
		if !strings.HasPrefix(out, filepath.Base(bin)+" v9.9.9-custom\n") || !strings.Contains(out, exts) {
			t.Errorf("%s --version:\n%s\nwant version v9.9.9-custom and %q", filepath.Base(bin), out, exts)
		}
	}
	if out := run(t, nil, cli, "cmdb"); out != "cmdb extension compiled in\n" {
		t.Errorf("attestation cmdb printed %q", out)
	}

	addr := proctest.FreeAddr(t)
	token := "custom-build-admin-token"
	url := proctest.Start(t, exec.Command(daemon, "--listen", addr, "--data-dir", filepath.Join(tmp, "data"), "--admin-token", token), addr)
	out := run(t, []string{"ATTESTATION_API_URL=" + url, "ATTESTATION_TOKEN=" + token}, cli, "extensions", "list")
	for _, name := range []string{"cmdb ", "rack ", "tags ", "webhook "} {
		if !strings.Contains(out, name) {
			t.Errorf("attestation extensions list:\n%s\nwant %s in it", out, name)
		}
	}
	if n := strings.Count(out, " running "); n != 4 {
		t.Errorf("attestation extensions list:\n%s\nwant four extensions running, got %d", out, n)
	}
}

func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serveModule writes the module in dir at version into proxy, a
// directory GOPROXY=file://proxy serves (the layout of `go help goproxy`).
func serveModule(t *testing.T, proxy, module, version, dir string) {
	t.Helper()
	at := filepath.Join(proxy, filepath.FromSlash(module), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	z := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		w, err := z.Create(module + "@" + version + "/" + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	if err == nil {
		err = z.Close()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"list":            version + "\n",
		version + ".info": `{"Version":"` + version + `","Time":"2026-01-01T00:00:00Z"}`,
		version + ".mod":  string(mod),
	} {
		if err := os.WriteFile(filepath.Join(at, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBuildErrors: what cannot be built is refused before go runs, saying
// which --with or directory is wrong.
func TestBuildErrors(t *testing.T) {
	src, err := builder.FindSource(".")
	if err != nil {
		t.Fatal(err)
	}
	noModule := t.TempDir()
	for _, tt := range []struct {
		name   string
		with   []string
		source string
		want   string
	}{
		{"missing directory", []string{"./no-such-extension"}, src, "--with ./no-such-extension: "},
		{"directory outside any module", []string{noModule}, src, "is in no Go module"},
		{"not a package path", []string{"@v1.0.0"}, src, "want a package path"},
		{"not the checkout", nil, filepath.Join("testdata", "rack"), "is the module example.com/rack, not github.com/attestation/attestation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := builder.Build(context.Background(), builder.Options{With: tt.with, Source: tt.source, Output: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
