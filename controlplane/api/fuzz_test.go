package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/agentapi"
	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// fuzzMachineID is a machine the fuzzer can reach by ID.
const fuzzMachineID = "11111111-2222-4333-8444-555555555555"

var fuzzMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead}

var fuzzContentTypes = []string{"", "application/json", "application/x-www-form-urlencoded", "text/plain", "application/proto", "application/json; charset=utf-8"}

// FuzzREST serves arbitrary REST requests (method, path under /api/v1/,
// query, content type, body) to the in-process API. Whatever comes in,
// the answer is never a 5xx, and a 4xx leaves the database as it was.
func FuzzREST(f *testing.F) {
	fp := strings.Repeat("ab", 32)
	seeds := []struct {
		method, ct        uint8
		path, query, body string
	}{
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp + `","macs":["52:54:00:12:34:56"],"role":"worker","hostname":"node-1"}`},
		{1, 0, "register", "", `{"ek_fingerprint":"` + strings.ToUpper(fp) + `"}`},
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp[:63] + `"}`},
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp + `","macs":["52-54-00-12-34-56","52:54:00:12:34:56"]}`},
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp + `","macs":"52:54:00:12:34:56"}`},
		{1, 1, "register", "", `{"ekFingerprint":"` + fp + `","schematicId":"` + fp + `"}`},
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp + `","colour":"red"}`},
		{1, 1, "register", "", `{"ek_fingerprint":"` + fp},
		{1, 2, "register", "", `ek_fingerprint=` + fp},
		{1, 1, "register", "", `null`},
		{1, 1, "register", "", `{"ek_fingerprint":"\ud800"}`},
		{0, 0, "machines", "", ""},
		{0, 0, "machines", "state=attested&role=worker&page_size=1", ""},
		{0, 0, "machines", "page_token=MTow", ""},
		{0, 0, "machines", "state=broken", ""},
		{0, 0, "machines", "page_size=-1", ""},
		{0, 0, "machines", "colour=red", ""},
		{0, 0, "machines", "state=registered&state=attested", ""},
		{0, 0, "machines/" + fuzzMachineID, "", ""},
		{0, 0, "machines/not-a-uuid", "", ""},
		{0, 0, "machines/%ff%fe", "", ""},
		{1, 1, "machines/" + fuzzMachineID + "/approve", "", `{"role":"worker","hostname":"node-1"}`},
		{1, 1, "machines/" + fuzzMachineID + "/approve", "", `{"id":"` + fuzzMachineID + `","role":"worker","hostname":"node-1"}`},
		{1, 1, "machines/" + fuzzMachineID + "/revoke", "", `{"reason":"  "}`},
		{1, 1, "machines/" + fuzzMachineID + "/revoke", "", `{"reason":"stolen"}`},
		{1, 1, "machines/" + fuzzMachineID + "/role", "", `{"role":"db"}`},
		{1, 1, "machines/" + fuzzMachineID + "/reinstate", "", `{}`},
		{1, 1, "machines/" + fuzzMachineID + "/reinstate", "", ``},
		{0, 0, "events", "machine=" + fuzzMachineID + "&type=node.registered&after_seq=0&page_size=10", ""},
		{0, 0, "events", "after_seq=x", ""},
		{0, 0, "extensions", "", ""},
		{3, 0, "machines", "", ""},
		{5, 0, "extensions", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.ct, s.path, s.query, []byte(s.body))
	}

	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	// One machine with a known ID, so that paths with it reach the handlers.
	_, err = st.Update(ctx, func(tx *store.Tx) error {
		return tx.InsertMachine(ctx, &store.Machine{ID: fuzzMachineID, EKFingerprint: strings.Repeat("cd", 32), State: lifecycle.Attested})
	})
	if err != nil {
		f.Fatal(err)
	}
	h, _, err := api.Handler(api.Options{
		Store:     st,
		Machines:  machines.New(st, nil),
		Committed: &events.Signal{},
		Auth:      auth.NewStaticToken("fuzz-token", "fuzz"),
	})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, method, ct uint8, path, query string, body []byte) {
		u, err := url.Parse("http://api.test/api/v1/" + path)
		if err != nil {
			t.Skip()
		}
		u.RawQuery = query
		req, err := http.NewRequest(fuzzMethods[int(method)%len(fuzzMethods)], u.String(), bytes.NewReader(body))
		if err != nil {
			t.Skip()
		}
		if c := fuzzContentTypes[int(ct)%len(fuzzContentTypes)]; c != "" {
			req.Header.Set("Content-Type", c)
		}
		req.Header.Set("Authorization", "Bearer fuzz-token")

		target := req.Method + " " + req.URL.RequestURI() // the transcoder rewrites req.URL
		before := dump(t, st)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%q: got HTTP %d %s, want no server error", target, w.Code, w.Body)
		}
		if w.Code >= 400 {
			if after := dump(t, st); after != before {
				t.Fatalf("%q: HTTP %d %s changed the database:\nbefore %s\nafter  %s", target, w.Code, w.Body, before, after)
			}
		}
	})
}

// dump renders every machine and the newest event of st.
func dump(t *testing.T, st *store.Store) string {
	t.Helper()
	ctx := context.Background()
	ms, err := st.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := st.LastEventSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "last event %d;", seq)
	for _, m := range ms {
		fmt.Fprintf(&b, " %+v", *m)
	}
	return b.String()
}

// fuzzProcedures are the Connect procedures FuzzConnect calls.
var fuzzProcedures = []string{
	"/attestation.v1.AgentService/Register",
	"/attestation.v1.AgentService/Attest",
	"/attestation.v1.AgentService/Heartbeat",
	"/attestation.v1.MachineService/RegisterMachine",
	"/attestation.v1.MachineService/ApproveMachine",
	"/attestation.v1.MachineService/ListMachines",
	"/attestation.v1.ConfigService/SetConfig",
	"/attestation.v1.EventService/ListEvents",
}

// FuzzConnect serves arbitrary Connect unary requests (procedure, JSON or
// binary, plain or gzip, any body) through the body limits to the
// in-process API with the real agent service: the answer is never a 5xx,
// an error changes nothing, and a gzip body never inflates past the limit.
func FuzzConnect(f *testing.F) {
	for _, s := range []struct {
		proc, ct uint8
		gzip     bool
		body     string
	}{
		{0, 0, false, `{"tpm_available":false,"hardware":{"macs":["52:54:00:12:34:56"]}}`},
		{0, 0, false, `{"tpm_available":true,"ek_public":"AAEACw==","ak_public":""}`},
		{1, 0, false, `{"challenge_id":"00","activated_secret":"AA=="}`},
		{3, 0, false, `{"ek_fingerprint":"` + strings.Repeat("ab", 32) + `","role":"worker"}`},
		{4, 0, false, `{"id":"` + fuzzMachineID + `","role":"worker","hostname":"node-1"}`},
		{6, 0, false, `{"role":"worker","template":"{{.Hostname}}"}`},
		{7, 1, false, "\x08\x01"},
		{0, 0, true, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"},
	} {
		f.Add(s.proc, s.ct, s.gzip, []byte(s.body))
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	_, err = st.Update(ctx, func(tx *store.Tx) error {
		return tx.InsertMachine(ctx, &store.Machine{ID: fuzzMachineID, EKFingerprint: strings.Repeat("cd", 32), State: lifecycle.Attested})
	})
	if err != nil {
		f.Fatal(err)
	}
	svc := machines.New(st, nil)
	cfgs := configs.NewService(st)
	agent, err := agentapi.New(agentapi.Options{Store: st, Machines: svc, Configs: cfgs,
		Policy: attest.Policy{Mode: attest.ModeAny}, AllowNoTPM: true,
		Limits: agentapi.Limits{RegisterBurst: 1}}) // no rate: the fuzzer is one source
	if err != nil {
		f.Fatal(err)
	}
	limits := api.NewLimits(64<<10, nil, nil)
	h, _, err := api.Handler(api.Options{
		Store: st, Machines: svc, Configs: cfgs, Agent: agent, Committed: &events.Signal{},
		Auth: auth.NewStaticToken("fuzz-token", "fuzz"), Limits: limits,
	})
	if err != nil {
		f.Fatal(err)
	}
	h = limits.Middleware(h)

	f.Fuzz(func(t *testing.T, proc, ct uint8, gzipped bool, body []byte) {
		p := fuzzProcedures[int(proc)%len(fuzzProcedures)]
		req := httptest.NewRequest(http.MethodPost, "http://api.test"+p, bytes.NewReader(body))
		req.Header.Set("Content-Type", []string{"application/json", "application/proto"}[int(ct)%2])
		if gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
		req.Header.Set("Authorization", "Bearer fuzz-token")
		before := dump(t, st)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s: got HTTP %d %s, want no server error", p, w.Code, w.Body)
		}
		if w.Code >= 400 {
			if after := dump(t, st); after != before {
				t.Fatalf("%s: HTTP %d %s changed the database:\nbefore %s\nafter  %s", p, w.Code, w.Body, before, after)
			}
		}
	})
}
