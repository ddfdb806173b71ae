package configs

import (
	"bytes"
	"reflect"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v2"
	sigsyaml "sigs.k8s.io/yaml"
)

// defaultViaJSON is how the default config was first written: the json
// tags, through sigs.k8s.io/yaml.
func defaultViaJSON(t testing.TB, m Machine) []byte {
	b, err := sigsyaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDefaultMatchesJSONTags: Default writes the bytes the JSON route
// wrote, for plain and awkward values alike.
func TestDefaultMatchesJSONTags(t *testing.T) {
	for _, m := range []Machine{
		Sample("worker"),
		{MACs: []string{}},
		{ID: "yes", Hostname: "no", Role: "0x10", EKFingerprint: "1e3", MACs: []string{"52:54:00:12:34:56", "~", "null"}},
		{ID: "a: b", Hostname: "- item", Role: "#comment", Serial: "line\nbreak", Product: "  padded  ", IP: "::1", MACs: []string{}},
		{ID: "ünïcødé", Hostname: `"quoted"`, Role: "'single'", SchematicID: "{}", SMBIOSUUID: "[]", Product: "@at", MACs: []string{""}},
	} {
		got, err := Default(m)
		if err != nil {
			t.Fatal(err)
		}
		if want := defaultViaJSON(t, m); !bytes.Equal(got, want) {
			t.Errorf("Default(%+v) =\n%s\nwant\n%s", m, got, want)
		}
	}
}

func FuzzDefault(f *testing.F) {
	f.Add("id", "host", "role", "52:54:00:12:34:56", "10.0.0.1", "serial")
	f.Add("yes", "- x", "a: b", "~", "", "line\nbreak")
	f.Fuzz(func(t *testing.T, id, host, role, mac, ip, serial string) {
		m := Machine{ID: id, Hostname: host, Role: role, MACs: []string{mac}, IP: ip, Serial: serial}
		got, err := Default(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sigsyaml.Marshal(m)
		if err != nil {
			// The JSON route fails on control characters; Default must
			// still write YAML that reads back as the machine.
			var back Machine
			if err := yaml.Unmarshal(got, &back); err != nil {
				t.Fatalf("Default(%+v) = %q, which does not parse: %v", m, got, err)
			}
			if !utf8.ValidString(id + host + role + mac + ip + serial) {
				return // invalid bytes read back as U+FFFD
			}
			if !reflect.DeepEqual(back, m) {
				t.Errorf("Default(%+v) = %q reads back as %+v", m, got, back)
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Default(%+v) =\n%q\nwant\n%q", m, got, want)
		}
	})
}
