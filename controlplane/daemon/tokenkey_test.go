package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigTokenKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigTokenKeyFile)
	first, err := configTokenKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := configTokenKey(path)
	if err != nil || !bytes.Equal(first, again) || len(first) != 32 {
		t.Fatalf("second start: %x, %v; want the same 32-byte key %x", again, err, first)
	}
	os.WriteFile(path, []byte("not hex\n"), 0o600)
	if _, err := configTokenKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("malformed key: got %v, want an error naming the file", err)
	}
}
