package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// TestConfigsREST: the config templates over REST, behind operator auth.
func TestConfigsREST(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	do := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, d.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", bearer(token))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: body %q is not JSON: %v", method, path, b, err)
		}
		return resp.StatusCode, out
	}
	for _, c := range []struct {
		method, path, body string
	}{
		{"PUT", "/api/v1/configs/worker", `{"template": "x"}`},
		{"GET", "/api/v1/configs/worker", ""},
		{"GET", "/api/v1/configs", ""},
	} {
		if status, _ := do(c.method, c.path, "", c.body); status != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", c.method, c.path, status)
		}
	}

	status, out := do("PUT", "/api/v1/configs/worker", daemontest.Token, `{"template": "hostname: {{.Hostname}}\n"}`)
	if status != http.StatusOK || out["config"].(map[string]any)["template"] != "hostname: {{.Hostname}}\n" {
		t.Fatalf("PUT: %d %v, want 200 and the template", status, out)
	}
	status, out = do("GET", "/api/v1/configs/worker", daemontest.Token, "")
	if status != http.StatusOK || out["config"].(map[string]any)["role"] != "worker" {
		t.Errorf("GET: %d %v, want 200 and worker's template", status, out)
	}
	status, out = do("GET", "/api/v1/configs", daemontest.Token, "")
	if cs, _ := out["configs"].([]any); status != http.StatusOK || len(cs) != 1 {
		t.Errorf("GET list: %d %v, want one template", status, out)
	}
	status, out = do("PUT", "/api/v1/configs/worker", daemontest.Token, `{"template": "{{.Nope}}"}`)
	if msg, _ := out["message"].(string); status != http.StatusBadRequest || !strings.Contains(msg, "Nope") {
		t.Errorf("PUT a bad template: %d %v, want 400 naming the field", status, out)
	}
	status, out = do("PUT", "/api/v1/configs/Bad%20Role", daemontest.Token, `{"template": "x"}`)
	if status != http.StatusBadRequest {
		t.Errorf("PUT a bad role: %d %v, want 400", status, out)
	}
	status, out = do("GET", "/api/v1/configs/storage", daemontest.Token, "")
	if status != http.StatusNotFound {
		t.Errorf("GET an unset role: %d %v, want 404", status, out)
	}

	// Bodies that contradict the path or leave out the template: 400, and
	// worker's template stays as it was.
	for _, c := range []struct{ name, body, want string }{
		{"another role, no template", `{"role": "other"}`, `field "role" of the body is "other" but the path says "worker"`},
		{"another role", `{"role": "other", "template": "x"}`, `the path says "worker"`},
		{"a role that is not a string", `{"role": 7, "template": "x"}`, `field "role" of the body is 7`},
		{"no template", `{}`, "template is required"},
		{"the role alone", `{"role": "worker"}`, "template is required"},
		{"a blank template", `{"template": "  \n"}`, "template is required"},
	} {
		status, out := do("PUT", "/api/v1/configs/worker", daemontest.Token, c.body)
		if msg, _ := out["message"].(string); status != http.StatusBadRequest || !strings.Contains(msg, c.want) {
			t.Errorf("PUT %s: %d %v, want 400 saying %q", c.name, status, out, c.want)
		}
	}
	status, out = do("GET", "/api/v1/configs/worker", daemontest.Token, "")
	if got := out["config"].(map[string]any)["template"]; status != http.StatusOK || got != "hostname: {{.Hostname}}\n" {
		t.Errorf("after the refused PUTs worker's template is %q (%d), want it unchanged", got, status)
	}
	// The same role in the body and the path is fine.
	if status, out := do("PUT", "/api/v1/configs/worker", daemontest.Token, `{"role": "worker", "template": "x"}`); status != http.StatusOK {
		t.Errorf("PUT with the path's role in the body: %d %v, want 200", status, out)
	}
	// A default schematic: an unknown one is refused and changes
	// nothing; a stored one is kept with the template.
	status, out = do("PUT", "/api/v1/configs/worker", daemontest.Token, `{"template": "y", "schematic_id": "`+strings.Repeat("ab", 32)+`"}`)
	if msg, _ := out["message"].(string); status != http.StatusBadRequest || !strings.Contains(msg, "does not exist") {
		t.Errorf("PUT with an unknown schematic: %d %v, want 400", status, out)
	}
	if _, out = do("GET", "/api/v1/configs/worker", daemontest.Token, ""); out["config"].(map[string]any)["template"] != "x" {
		t.Errorf("after the refused PUT the template is %v, want x", out["config"])
	}
	req, _ := http.NewRequest("POST", d.URL+"/api/v1/schematics", strings.NewReader(`{"schematic": {"boot": "network"}}`))
	req.Header.Set("Authorization", bearer(daemontest.Token))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	status, out = do("PUT", "/api/v1/configs/worker", daemontest.Token, `{"template": "y", "schematic_id": "`+created.ID+`"}`)
	if status != http.StatusOK || out["config"].(map[string]any)["schematic_id"] != created.ID {
		t.Errorf("PUT with a stored schematic: %d %v, want 200 and the schematic", status, out)
	}

	// A machine route: the ID in the body must be the path's.
	status, out = do("POST", "/api/v1/machines/0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a/revoke", daemontest.Token,
		`{"id": "11111111-5c1e-4d8e-9f3a-2b1c0d9e8f7a", "reason": "x"}`)
	if msg, _ := out["message"].(string); status != http.StatusBadRequest || !strings.Contains(msg, `field "id"`) {
		t.Errorf("revoke with another ID in the body: %d %v, want 400 naming the field", status, out)
	}
}
