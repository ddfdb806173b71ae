//go:build cgo

package agentapi_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// provisioned enrolls a simulated machine, approves it and returns the
// config URL its watch hands out.
func (h *harness) provisioned(t *testing.T) (machineID, url string) {
	t.Helper()
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)
	h.approve(t, ch.MachineId, "worker", "node-1")
	url = h.configURL(t, att.SessionToken)
	a.Close()
	return ch.MachineId, url
}

// TestConfigTokenSecondUse: a config URL works once.
func TestConfigTokenSecondUse(t *testing.T) {
	h := start(t, nil)
	id, url := h.provisioned(t)
	if status, body := fetch(t, url); status != http.StatusOK {
		t.Fatalf("first GET: %d %q, want 200", status, body)
	}
	status, body := fetch(t, url)
	if status != http.StatusGone || !strings.Contains(body, "used already") {
		t.Errorf("second GET: %d %q, want 410 saying it was used", status, body)
	}
	if got, want := h.eventTypes(t, id), "registered online provisioned configured"; got != want {
		t.Errorf("events %q, want %q (one configured)", got, want)
	}
}

// TestConfigTokenConcurrent: of 100 concurrent fetches of one URL, exactly
// one gets the config.
func TestConfigTokenConcurrent(t *testing.T) {
	h := start(t, nil)
	id, url := h.provisioned(t)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		status = map[int]int{}
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			status[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if status[http.StatusOK] != 1 || status[http.StatusGone] != 99 {
		t.Errorf("statuses %v, want exactly one 200 and 99 410", status)
	}
	if got, want := h.eventTypes(t, id), "registered online provisioned configured"; got != want {
		t.Errorf("events %q, want %q (one configured)", got, want)
	}
}

// TestConfigTokenExpired: an expired config URL is gone.
func TestConfigTokenExpired(t *testing.T) {
	h := start(t, func(c *config.Config) { c.ConfigTokenTTL = config.Duration(300 * time.Millisecond) })
	id, url := h.provisioned(t)
	time.Sleep(400 * time.Millisecond)
	status, body := fetch(t, url)
	if status != http.StatusGone || !strings.Contains(body, "expired") {
		t.Errorf("GET: %d %q, want 410 saying it expired", status, body)
	}
	if got, want := h.eventTypes(t, id), "registered online provisioned"; got != want {
		t.Errorf("events %q, want %q (not configured)", got, want)
	}
}

// TestConfigTokenUnknown: a URL that was never handed out is not found,
// and only GET fetches.
func TestConfigTokenUnknown(t *testing.T) {
	h := start(t, nil)
	_, url := h.provisioned(t)
	for _, u := range []string{
		h.d.URL + "/config/" + strings.Repeat("A", 43),
		h.d.URL + "/config/short",
		h.d.URL + "/config/" + strings.Repeat("%FF", 32),
	} {
		if status, body := fetch(t, u); status != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404", u, status, body)
		}
	}
	for _, method := range []string{http.MethodHead, http.MethodPost} {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s config URL: %d, want 405", method, resp.StatusCode)
		}
	}
	if status, _ := fetch(t, url); status != http.StatusOK {
		t.Errorf("GET after HEAD and POST: %d, want 200 (they did not spend the token)", status)
	}
}

// TestConfigTemplates: templates are checked when set, and the config is
// rendered from the machine's role's template.
func TestConfigTemplates(t *testing.T) {
	h := start(t, nil)
	for _, c := range []struct{ name, template, want string }{
		{"does not parse", "{{.Hostname", "unclosed action"},
		{"unknown field", "{{.Nope}}", "Nope"},
		{"unknown function", "{{upper .Hostname}}", "upper"},
		{"fails to render", "{{index .MACs 5}}", "does not render for a sample machine"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.configs.SetConfig(t.Context(), connect.NewRequest(&attestationv1.SetConfigRequest{Role: "worker", Template: c.template}))
			wantCode(t, err, connect.CodeInvalidArgument, c.want)
		})
	}
	_, err := h.configs.GetConfig(t.Context(), connect.NewRequest(&attestationv1.GetConfigRequest{Role: "worker"}))
	wantCode(t, err, connect.CodeNotFound, "no config template")

	tmpl := "#cloud-config\nhostname: {{.Hostname}}\nid: {{.ID}}\nschematic: {{.SchematicID}}\nip: {{.IP}}\n"
	if _, err := h.configs.SetConfig(t.Context(), connect.NewRequest(&attestationv1.SetConfigRequest{Role: "worker", Template: tmpl})); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	got, err := h.configs.GetConfig(t.Context(), connect.NewRequest(&attestationv1.GetConfigRequest{Role: "worker"}))
	if err != nil || got.Msg.Config.Template != tmpl || got.Msg.Config.UpdatedAt == nil {
		t.Fatalf("GetConfig: %v, %v; want the template just set", got, err)
	}
	list, err := h.configs.ListConfigs(t.Context(), connect.NewRequest(&attestationv1.ListConfigsRequest{}))
	if err != nil || len(list.Msg.Configs) != 1 || list.Msg.Configs[0].Role != "worker" {
		t.Fatalf("ListConfigs: %v, %v; want worker", list, err)
	}

	id, url := h.provisioned(t)
	status, body := fetch(t, url)
	if want := "#cloud-config\nhostname: node-1\nid: " + id + "\nschematic: \nip: 127.0.0.1\n"; status != http.StatusOK || body != want {
		t.Errorf("GET config: %d %q, want 200 %q", status, body, want)
	}
}
