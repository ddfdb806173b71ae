package configs

import (
	"bytes"
	"reflect"
	"strings"
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

// plainCorpus are values of plainChars that the resolver and the emitter
// treat in every way plainDefault knows: strings, numbers of each base,
// floats, dates, words, base-60 numbers, indicators.
var plainCorpus = []string{
	"", "a", "node-1", "node-1.lab.example", "worker", "x", "-", "--", "---", "---x", "...", "..x", ".", "..", ":", "a:", ":a", "a:b",
	"0", "1", "-1", "007", "0x1f", "0X1F", "0o17", "0b101", "0b102", "-0b101", "0x", "1e3", "1E3", "1e", "-1e-3", ".5", "-.5", "5.", "1.2.3",
	"1_000", "12:30", "-12:30", "1:2:3", "1:60", "12:30.5", "190:20:30", "52:54:00:12:34:56", "aa:bb:cc:dd:ee:ff", "00:00:00:00:00:00",
	"2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14T21:59:43Z", "2001-12-1", "2001-1-1", "20011-12-14", "2001-13-45",
	"y", "Y", "yes", "Yes", "YES", "yEs", "n", "no", "No", "on", "ON", "off", "true", "True", "tRUE", "false", "null", "Null", "NULL", "nil",
	".nan", ".NaN", ".inf", "-.inf", "-.INF", "inf", "Infinity", "nan", "0x1p-2", "1p3", "127.0.0.1", "::1", "fe80::1", "10.0.0.1",
	"0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a", "12345678-1234-1234-1234-123456789012", strings.Repeat("9f86d081", 8), strings.Repeat("1", 64),
	"18446744073709551615", "18446744073709551616", "-9223372036854775808", "0e0", "1e400",
}

// TestPlainDefaultMatchesYAML: plainDefault writes what yaml.Marshal
// writes, for every value of plainCorpus in every field, or leaves it to
// yaml.Marshal; and it does write the values a storm of machines has.
func TestPlainDefaultMatchesYAML(t *testing.T) {
	check := func(m Machine) bool {
		t.Helper()
		got, ok := plainDefault(m)
		if !ok {
			return false
		}
		want, err := yaml.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("plainDefault(%+v) =\n%s\nyaml.Marshal:\n%s", m, got, want)
		}
		return true
	}
	for _, v := range plainCorpus {
		check(Machine{EKFingerprint: v, Hostname: v, ID: v, IP: v, MACs: []string{v, v}, Product: v, Role: v, SchematicID: v, Serial: v, SMBIOSUUID: v})
		check(Machine{Role: v, MACs: []string{}})
		check(Machine{Hostname: v})
	}
	if m := Sample("worker"); check(m) {
		t.Errorf("plainDefault wrote %+v, whose product has a space it does not know", m)
	}
	m := Sample("worker")
	m.Product = "R650"
	if !check(m) {
		t.Errorf("plainDefault left %+v to yaml.Marshal", m)
	}
}

func FuzzPlainDefault(f *testing.F) {
	for _, v := range plainCorpus {
		f.Add(v, v)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		m := Machine{EKFingerprint: a, Hostname: b, ID: a, Role: b, MACs: []string{a, b}, Serial: b}
		got, ok := plainDefault(m)
		if !ok {
			return
		}
		want, err := yaml.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("plainDefault(%+v) =\n%q\nyaml.Marshal:\n%q", m, got, want)
		}
	})
}
