package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
)

// TestListenAddressTaken: a daemon whose address another process holds
// says so and what to do, and writes nothing: no data directory, no
// database, no admin token.
func TestListenAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := config.Default()
	cfg.Listen = taken.Addr().String()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	err = daemon.Run(t.Context(), cfg, daemon.Options{
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Extensions: []extensions.Extension{},
	})
	if err == nil {
		t.Fatal("Run on a taken address: got no error")
	}
	for _, want := range []string{"listen on " + cfg.Listen + ": address already in use", "another attestationd", "--listen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got error %q, want it to say %q", err, want)
		}
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("data directory after a failed listen: got %v, want it never created", err)
	}
}

// TestBootAssetsMissing: without the agent's kernel and initramfs the
// daemon warns at start, /readyz stays ready but says what is missing and
// how to build it, and a machine that would boot the agent gets a script
// saying so on its console instead of one fetching files that are not
// there; building them fixes all of it without a restart.
func TestBootAssetsMissing(t *testing.T) {
	var logs lockedBuffer
	assets := t.TempDir()
	d := daemontest.Start(t, daemontest.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Config: func(c *config.Config) { c.BootAssets = assets },
	})
	build := "make boot-assets, or attestation images boot-assets --agent bin/attestation-agent --out " + assets

	t.Run("warning at start", func(t *testing.T) {
		want := `level=WARN msg="boot assets missing" dir=` + assets + ` missing="vmlinuz, initrd.img" build="` + build + `"`
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks\n%s\ngot\n%s", want, logs.String())
		}
	})
	t.Run("readyz", func(t *testing.T) {
		code, body := d.Get(t, "/readyz")
		want := "ok\nboot assets: missing vmlinuz, initrd.img in " + assets + " (run " + build + ")\n"
		if code != http.StatusOK || body != want {
			t.Errorf("GET /readyz: got %d\n%s\nwant 200\n%s", code, body, want)
		}
	})
	t.Run("script", func(t *testing.T) {
		code, body := d.Get(t, "/boot/ipxe?mac=52:54:00:00:00:07&arch=x86_64-efi")
		for _, want := range []string{
			"#!ipxe\n",
			"\necho attestation boot: cannot boot the agent: the server has no vmlinuz, initrd.img in its boot assets directory " + assets + "\n",
			"\necho attestation boot: build them on the server: " + build + "\n",
			"\nsleep 10\nexit 1\n",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("script lacks %q:\n%s", want, body)
			}
		}
		if code != http.StatusOK || strings.Contains(body, "\nkernel ") {
			t.Errorf("got %d and a script that boots:\n%s\nwant 200 and one that explains (iPXE runs no script of an error status)", code, body)
		}
		if _, body := d.Get(t, "/boot/ipxe?mac=52:54:00:00:00:07&arch=arm64-efi"); !strings.Contains(body, "no arm64/vmlinuz, arm64/initrd.img in") {
			t.Errorf("arm64 script: got\n%s\nwant it to name arm64/vmlinuz and arm64/initrd.img", body)
		}
	})

	for _, name := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(assets, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("built while running", func(t *testing.T) {
		if code, body := d.Get(t, "/readyz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("GET /readyz: got %d %q, want 200 \"ok\\n\"", code, body)
		}
		if _, body := d.Get(t, "/boot/ipxe?mac=52:54:00:00:00:07&arch=x86_64-efi"); !strings.Contains(body, "\nkernel "+d.URL+"/boot/assets/vmlinuz") {
			t.Errorf("script: got\n%s\nwant one that boots the agent", body)
		}
	})
}

// strict is an extension that refuses settings it does not know.
type strict struct{}

func (strict) Info() extensions.Info { return extensions.Info{Name: "strict", Version: "1.0.0"} }

func (strict) Provision(_ context.Context, h *extensions.Host) error {
	var s struct {
		Retries int `json:"retries"`
	}
	dec := json.NewDecoder(bytes.NewReader(h.Config))
	dec.DisallowUnknownFields()
	return dec.Decode(&s)
}

// TestExtensionSettingsErrorNamesFileLine: an extension refusing its
// section of the config file is reported with the file and line of it.
func TestExtensionSettingsErrorNamesFileLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attestationd.yaml")
	if err := os.WriteFile(path, []byte("log_level: info\nextensions:\n  strict:\n    retires: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	config.AddFlags(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(fs, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	daemontest.Start(t, daemontest.Options{
		Logger:     slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Extensions: []extensions.Extension{strict{}},
		Config: func(c *config.Config) {
			listen, dataDir, token := c.Listen, c.DataDir, c.AdminToken
			*c = loaded
			c.Listen, c.DataDir, c.AdminToken = listen, dataDir, token
		},
	})
	want := `provision: ` + path + `:3: extensions.strict: json: unknown field \"retires\"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}
