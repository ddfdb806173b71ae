package configs

import (
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/attestation/attestation/controlplane/store"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, template string
		wantErr        string // "" for valid
	}{
		{"plain text", "static config\n", ""},
		{"every field", "{{.ID}} {{.Hostname}} {{.Role}} {{.EKFingerprint}} {{join .MACs \",\"}} {{.IP}} {{.SchematicID}} {{.SMBIOSUUID}} {{.Serial}} {{.Product}}", ""},
		{"range over MACs", "{{range .MACs}}- {{.}}\n{{end}}", ""},
		{"empty", "", "is required"},
		{"blank", " \n\t", "is required"},
		{"unclosed action", "{{.Hostname", "unclosed action"},
		{"unknown field", "{{.Hostnme}}", "Hostnme"},
		{"unknown function", "{{upper .Role}}", "upper"},
		{"index out of range", "{{index .MACs 9}}", "does not render for a sample machine"},
		{"too large output", "{{range 2000000}}x{{end}}", "exceeds"},
		{"too large template", strings.Repeat("x", MaxSize+1), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check("worker", tc.template)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v, want nil", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check: got %v, want an *InvalidError mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestRender(t *testing.T) {
	m := FromStore(&store.Machine{ID: "id-1", Hostname: "node-1", Role: "worker", MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}, IP: "192.0.2.1"})
	got, err := Render("worker", "{{.Hostname}}/{{.Role}}/{{join .MACs \" \"}}/{{.IP}}", m)
	if err != nil {
		t.Fatal(err)
	}
	if want := "node-1/worker/52:54:00:00:00:01 52:54:00:00:00:02/192.0.2.1"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// No MACs renders as an empty list, not an error.
	if got, err := Render("worker", "{{join .MACs \",\"}}.", FromStore(&store.Machine{})); err != nil || string(got) != "." {
		t.Errorf("render without MACs: %q, %v; want %q", got, err, ".")
	}
}

func TestDefault(t *testing.T) {
	m := FromStore(&store.Machine{ID: "id-1", Hostname: "node-1", Role: "worker", EKFingerprint: "ab", MACs: []string{"52:54:00:00:00:01"}})
	b, err := Default(m)
	if err != nil {
		t.Fatal(err)
	}
	var got Machine
	if err := yaml.UnmarshalStrict(b, &got); err != nil {
		t.Fatalf("default config %q is not the machine as YAML: %v", b, err)
	}
	if got.ID != "id-1" || got.Hostname != "node-1" || got.Role != "worker" || got.EKFingerprint != "ab" || len(got.MACs) != 1 {
		t.Errorf("default config decodes to %+v, want the machine", got)
	}
}
