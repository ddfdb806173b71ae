package api_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// TestResponseCompression: a client that accepts gzip gets a response of
// a few hundred bytes as it is, and a large one compressed.
func TestResponseCompression(t *testing.T) {
	e := newEnv(t)
	first := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(0), Role: "worker"})
	for i := 1; i < 40; i++ {
		e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(i), Role: "worker"})
	}
	post := func(procedure string, req, into proto.Message) (encoding string, size int) {
		t.Helper()
		body, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.d.URL+procedure, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/proto")
		r.Header.Set("Accept-Encoding", "gzip")
		r.Header.Set("Authorization", bearer(daemontest.Token))
		// A Transport of its own: the default one would ask for gzip and
		// undo it unseen.
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s: %s", procedure, resp.Status, raw)
		}
		encoding = resp.Header.Get("Content-Encoding")
		msg := raw
		if encoding == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("%s: %v", procedure, err)
			}
			if msg, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%s: %v", procedure, err)
			}
		}
		if err := proto.Unmarshal(msg, into); err != nil {
			t.Fatalf("%s: %v", procedure, err)
		}
		return encoding, len(msg)
	}

	var got attestationv1.GetMachineResponse
	enc, size := post(procGet, &attestationv1.GetMachineRequest{Id: first.Id}, &got)
	if enc != "" || got.GetMachine().GetId() != first.Id {
		t.Errorf("GetMachine (%d bytes): Content-Encoding %q, machine %q; want none, %q", size, enc, got.GetMachine().GetId(), first.Id)
	}
	var list attestationv1.ListMachinesResponse
	enc, size = post(procList, &attestationv1.ListMachinesRequest{PageSize: 100}, &list)
	if size < 4<<10 {
		t.Fatalf("ListMachines answered %d bytes, too few to test compression", size)
	}
	if enc != "gzip" || len(list.Machines) != 40 {
		t.Errorf("ListMachines (%d bytes): Content-Encoding %q, %d machines; want gzip, 40", size, enc, len(list.Machines))
	}
}
