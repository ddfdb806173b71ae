package schematic

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// randomSchematic makes a schematic of random content.
func randomSchematic(r *rand.Rand) map[string]any {
	word := func() string { return fmt.Sprintf("w%d", r.IntN(1000)) }
	doc := map[string]any{}
	if r.IntN(2) == 0 {
		var args []any
		for range r.IntN(4) {
			args = append(args, word()+"="+word())
		}
		doc["kernel_args"] = args
	}
	if r.IntN(2) == 0 {
		doc["agent"] = map[string]any{"url": "http://" + word() + ":9000", "tpm": []string{"required", "optional"}[r.IntN(2)]}
	}
	if r.IntN(2) == 0 {
		doc["modules"] = []any{"e1000", word()}
	}
	if r.IntN(2) == 0 {
		var files []any
		for i := range r.IntN(4) {
			files = append(files, map[string]any{"path": fmt.Sprintf("etc/f%d", i), "content": word(), "mode": []string{"0600", "644", "0755"}[r.IntN(3)]})
		}
		doc["files"] = files
	}
	if r.IntN(2) == 0 {
		labels := map[string]any{}
		for range r.IntN(4) {
			labels[word()] = word()
		}
		doc["labels"] = labels
	}
	if r.IntN(2) == 0 {
		doc["boot"] = []string{"disk", "network"}[r.IntN(2)]
	}
	return doc
}

// shuffledJSON writes v as JSON with object keys in random order and
// random spacing.
func shuffledJSON(r *rand.Rand, v any) string {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		var parts []string
		for _, k := range keys {
			kb, _ := json.Marshal(k)
			parts = append(parts, string(kb)+strings.Repeat(" ", r.IntN(3))+":"+shuffledJSON(r, v[k]))
		}
		return "{" + strings.Join(parts, ","+strings.Repeat("\n", r.IntN(2))) + "}"
	case []any:
		var parts []string
		for _, e := range v {
			parts = append(parts, shuffledJSON(r, e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// TestIDProperty: the ID depends on the content only, not on key order,
// spacing, YAML or JSON; and different content gives different IDs.
func TestIDProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ids := map[string]string{}
	for i := range 500 {
		doc := randomSchematic(r)
		canonical, _ := json.Marshal(doc)
		want, err := Parse(canonical)
		if err != nil {
			t.Fatalf("case %d %s: %v", i, canonical, err)
		}
		y, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, form := range []string{shuffledJSON(r, doc), shuffledJSON(r, doc), string(y)} {
			got, err := Parse([]byte(form))
			if err != nil {
				t.Fatalf("case %d %q: %v", i, form, err)
			}
			if got.ID() != want.ID() {
				t.Fatalf("case %d: %q has ID %s, %s has %s", i, form, got.ID(), canonical, want.ID())
			}
		}
		if other, seen := ids[want.ID()]; seen && other != string(want.Canonical()) {
			t.Fatalf("two schematics share ID %s: %s and %s", want.ID(), other, want.Canonical())
		}
		ids[want.ID()] = string(want.Canonical())
	}
	if len(ids) < 50 {
		t.Errorf("only %d distinct schematics in 500", len(ids))
	}
}

func TestNormalize(t *testing.T) {
	a, _ := Parse([]byte(`{"boot":"disk","files":[{"path":"b","content":"x","mode":"644"},{"path":"a","content":"y","mode":"600"}],"labels":{},"modules":[]}`))
	b, err := Parse([]byte("files:\n- {path: a, content: 'y', mode: '0600'}\n- {path: b, content: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a == nil || b == nil || a.ID() != b.ID() {
		t.Fatalf("equal schematics differ: %s and %s", a.Canonical(), b.Canonical())
	}
	if got, want := string(a.Canonical()), `{"files":[{"path":"a","content":"y","mode":"0600"},{"path":"b","content":"x"}]}`; got != want {
		t.Errorf("canonical %s, want %s", got, want)
	}
	empty, err := Parse([]byte(""))
	if err != nil || string(empty.Canonical()) != "{}" || !ValidID(empty.ID()) {
		t.Errorf("the empty schematic: %v %s", err, empty.Canonical())
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ name, doc, want string }{
		{"unknown field", `{"kernal_args": ["quiet"]}`, `field kernal_args: unknown field`},
		{"unknown nested field", `{"agent": {"urll": "x"}}`, `field urll: unknown field`},
		{"wrong type", `{"kernel_args": "quiet"}`, `field kernel_args: want []string`},
		{"wrong nested type", `{"labels": {"a": 1}}`, `field labels: want string, got a number`},
		{"not an object", `[1, 2]`, `want an object`},
		{"not YAML", "a: [", "not YAML or JSON"},
		{"too large", `{"labels": {"a": "` + strings.Repeat("x", MaxSize) + `"}}`, "at most 65536"},
		{"a blank kernel argument", `{"kernel_args": ["a b"]}`, "field kernel_args[0]"},
		{"a bad URL", `{"agent": {"url": "ftp://x"}}`, "field agent.url"},
		{"a bad TPM", `{"agent": {"tpm": "maybe"}}`, "field agent.tpm"},
		{"a bad CA", `{"agent": {"ca": "x"}}`, "field agent.ca"},
		{"a bad module", `{"modules": ["e1000", "../x"]}`, "field modules[1]"},
		{"a path with ..", `{"files": [{"path": "../etc/passwd", "content": ""}]}`, "field files[0].path"},
		{"an absolute path", `{"files": [{"path": "/etc/x", "content": ""}]}`, "field files[0].path"},
		{"a path not clean", `{"files": [{"path": "etc/../init", "content": ""}]}`, "field files[0].path"},
		{"the init", `{"files": [{"path": "init", "content": ""}]}`, "writes that file"},
		{"a path twice", `{"files": [{"path": "a", "content": ""}, {"path": "a", "content": ""}]}`, "appears twice"},
		{"a bad mode", `{"files": [{"path": "a", "content": "", "mode": "999"}]}`, "field files[0].mode"},
		{"a bad label key", `{"labels": {"a b": "x"}}`, "field labels"},
		{"a bad boot", `{"boot": "usb"}`, "field boot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	s, _ := Parse(nil)
	ids := []string{s.ID(), strings.ToUpper(s.ID()), "ab", strings.Repeat("g", 64)}
	got := []bool{}
	for _, id := range ids {
		got = append(got, ValidID(id))
	}
	if fmt.Sprint(got) != "[true false false false]" {
		t.Errorf("ValidID %v = %v", ids, got)
	}
}
