package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// TestSchematicsREST drives /api/v1/schematics: create (idempotent, the ID
// the same whatever the key order), get, list, and the refusals (unknown
// field, wrong type, a path with .., a 10 MB document, an unknown ID),
// which store nothing; 50 concurrent creates of one schematic store it
// once.
func TestSchematicsREST(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, d.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", bearer(daemontest.Token))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	status, out := do("POST", "/api/v1/schematics", `{"schematic": {"kernel_args": ["console=ttyS0"], "labels": {"rack": "a1", "dc": "x"}, "boot": "network"}}`)
	id, _ := out["id"].(string)
	if status != http.StatusOK || len(id) != 64 || out["created"] != true {
		t.Fatalf("create: %d %v, want 200, an ID, created", status, out)
	}
	// The same content, keys in another order: the same ID, not created.
	status, out = do("POST", "/api/v1/schematics", `{"schematic": {"boot": "network", "labels": {"dc": "x", "rack": "a1"}, "kernel_args": ["console=ttyS0"]}}`)
	if status != http.StatusOK || out["id"] != id || out["created"] != false {
		t.Errorf("create again: %d %v, want 200, ID %s, not created", status, out, id)
	}
	status, out = do("GET", "/api/v1/schematics/"+id, "")
	sc, _ := out["schematic"].(map[string]any)
	if status != http.StatusOK || sc["id"] != id || sc["schematic"].(map[string]any)["boot"] != "network" {
		t.Errorf("get: %d %v", status, out)
	}

	for _, c := range []struct{ name, body, want string }{
		{"an unknown field", `{"schematic": {"kernal_args": []}}`, "field kernal_args: unknown field"},
		{"a wrong type", `{"schematic": {"modules": "e1000"}}`, "field modules"},
		{"a path with ..", `{"schematic": {"files": [{"path": "../x", "content": ""}]}}`, "field files[0].path"},
		{"a 10 MB document", `{"schematic": {"labels": {"a": "` + strings.Repeat("x", 10<<20) + `"}}}`, "request body too large"},
		{"a 100 KB document", `{"schematic": {"labels": {"a": "` + strings.Repeat("x", 100<<10) + `"}}}`, "at most 65536"},
	} {
		status, out := do("POST", "/api/v1/schematics", c.body)
		if msg, _ := out["message"].(string); status/100 != 4 || !strings.Contains(msg, c.want) {
			t.Errorf("create %s: %d %v, want a 4xx saying %q", c.name, status, out, c.want)
		}
	}
	if status, out := do("GET", "/api/v1/schematics/"+strings.Repeat("0", 64), ""); status != http.StatusNotFound {
		t.Errorf("get an unknown ID: %d %v, want 404", status, out)
	}
	if status, out := do("GET", "/api/v1/schematics/xyz", ""); status != http.StatusBadRequest {
		t.Errorf("get a malformed ID: %d %v, want 400", status, out)
	}

	// 50 concurrent creates of a new schematic: one ID, one created.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[string]bool{}
	)
	for range 50 {
		wg.Go(func() {
			status, out := do("POST", "/api/v1/schematics", `{"schematic": {"modules": ["e1000e"]}}`)
			mu.Lock()
			defer mu.Unlock()
			if status != http.StatusOK {
				t.Errorf("concurrent create: %d %v", status, out)
				return
			}
			ids[out["id"].(string)] = true
			if out["created"] == true {
				created++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Errorf("50 concurrent creates: %d IDs, %d created; want 1 and 1", len(ids), created)
	}
	status, out = do("GET", "/api/v1/schematics", "")
	if list, _ := out["schematics"].([]any); status != http.StatusOK || len(list) != 2 {
		t.Errorf("list: %d %v, want the 2 schematics", status, out)
	}
}
