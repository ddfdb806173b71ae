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
}
