package store_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"github.com/attestation/attestation/controlplane/store"
)

func TestSecret(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		db := b.newDB(t)
		st := b.open(t, db)
		ctx := t.Context()
		random := func() ([]byte, error) {
			v := make([]byte, 32)
			rand.Read(v)
			return v, nil
		}
		first, created, err := st.Secret(ctx, "key", random)
		if err != nil || !created || len(first) != 32 {
			t.Fatalf("first: %x, created %v, %v; want a new 32-byte value", first, created, err)
		}
		again, created, err := st.Secret(ctx, "key", random)
		if err != nil || created || !bytes.Equal(again, first) {
			t.Fatalf("again: %x, created %v, %v; want %x, not created", again, created, err, first)
		}
		boom := errors.New("no value")
		if _, _, err := st.Secret(ctx, "other", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("failing value: got %v, want %v", err, boom)
		}
		if _, _, err := st.Secret(ctx, "other", random); err != nil {
			t.Fatalf("after a failing value: %v", err)
		}
		// Processes starting at once agree on one value; on SQLite one
		// process owns the file, so they are callers of one store.
		stores := []*store.Store{st}
		if b.name == "postgres" {
			stores = append(stores, b.open(t, db), b.open(t, db))
		}
		const n = 12
		got := make([][]byte, n)
		nCreated := make([]bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				got[i], nCreated[i], err = stores[i%len(stores)].Secret(ctx, "shared", random)
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		creators := 0
		for i := range n {
			if !bytes.Equal(got[i], got[0]) {
				t.Errorf("caller %d got %x, caller 0 %x", i, got[i], got[0])
			}
			if nCreated[i] {
				creators++
			}
		}
		if creators != 1 {
			t.Errorf("%d callers created the secret, want 1", creators)
		}
	})
}
