package httpboot_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/httpboot"
	"github.com/attestation/attestation/controlplane/store"
)

// TestStoreUnavailable: a store that cannot be read decides nothing; the
// script request gets 503 and a script that waits and reboots.
func TestStoreUnavailable(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	s, err := httpboot.New(httpboot.Options{
		Resolver:  &boot.Resolver{Store: st, Policy: boot.Policy{PublicURL: "http://h"}},
		AssetsDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(s.Handler(http.NotFoundHandler()))
	defer srv.Close()
	resp, body := do(t, "GET", srv.URL+"/boot/ipxe?mac=52:54:00:00:00:01", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("got %s, Retry-After %q, want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if !strings.HasPrefix(string(body), "#!ipxe\n") || !strings.Contains(string(body), "reboot") {
		t.Errorf("got body\n%s\nwant a script that reboots", body)
	}
	if resp, _ := do(t, "GET", srv.URL+"/other", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a path outside /boot/: got %s, want the next handler's 404", resp.Status)
	}
}
