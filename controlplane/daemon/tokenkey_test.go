package daemon

import (
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
)

// openSQLite opens a fresh SQLite store, closed when the test ends.
func openSQLite(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConfigTokenKey(t *testing.T) {
	ctx := t.Context()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("generated", func(t *testing.T) {
		st := openSQLite(t)
		path := filepath.Join(t.TempDir(), ConfigTokenKeyFile)
		first, err := configTokenKey(ctx, st, path, quiet)
		if err != nil || len(first) != 32 {
			t.Fatalf("first start: %x, %v; want a 32-byte key", first, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("key file: %v; want none, the database keeps the key", err)
		}
		again, err := configTokenKey(ctx, st, path, quiet)
		if err != nil || !bytes.Equal(first, again) {
			t.Fatalf("second start: %x, %v; want the same key %x", again, err, first)
		}
	})
	t.Run("imported", func(t *testing.T) {
		// A data directory from before the database kept the key: its
		// key is kept, so the config URLs issued still open.
		st := openSQLite(t)
		path := filepath.Join(t.TempDir(), ConfigTokenKeyFile)
		old := bytes.Repeat([]byte{7}, 32)
		os.WriteFile(path, []byte(hex.EncodeToString(old)+"\n"), 0o600)
		var logs bytes.Buffer
		key, err := configTokenKey(ctx, st, path, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil || !bytes.Equal(key, old) {
			t.Fatalf("upgrade: %x, %v; want the file's key %x", key, err, old)
		}
		if !strings.Contains(logs.String(), "imported the config token key into the database") {
			t.Errorf("log %q: want the import said", logs.String())
		}
		os.Remove(path)
		if again, err := configTokenKey(ctx, st, path, quiet); err != nil || !bytes.Equal(again, old) {
			t.Fatalf("without the file: %x, %v; want the database's %x", again, err, old)
		}
	})
	t.Run("malformed file", func(t *testing.T) {
		st := openSQLite(t)
		path := filepath.Join(t.TempDir(), ConfigTokenKeyFile)
		os.WriteFile(path, []byte("not hex\n"), 0o600)
		if _, err := configTokenKey(ctx, st, path, quiet); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("malformed key: got %v, want an error naming the file", err)
		}
		var n int
		st.DB().QueryRow(`SELECT count(*) FROM secrets`).Scan(&n)
		if n != 0 {
			t.Errorf("%d secrets stored after the refusal, want none", n)
		}
	})
	t.Run("instances", func(t *testing.T) {
		// Instances over one PostgreSQL, each with a data directory of
		// its own, starting at once, get one key.
		dsn := pgtest.DSN(t)
		const n = 3
		keys := make([][]byte, n)
		var wg sync.WaitGroup
		for i := range n {
			st, err := store.OpenPostgres(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			path := filepath.Join(t.TempDir(), ConfigTokenKeyFile)
			wg.Go(func() {
				var err error
				if keys[i], err = configTokenKey(ctx, st, path, quiet); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for i := range n {
			if len(keys[i]) != 32 || !bytes.Equal(keys[i], keys[0]) {
				t.Errorf("instance %d: key %x, instance 0: %x; want one 32-byte key", i, keys[i], keys[0])
			}
		}
	})
}
