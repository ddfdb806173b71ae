package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// origin says where settings came from, so that an error about one names
// the flag, the variable or the config file's line that set it.
type origin struct {
	file string
	// lines holds the line of every key the file sets, by dotted path
	// (pcr_policy.worker.7, dhcp_dns[1]).
	lines map[string]int
	// over holds the flag or variable that set a key over the file.
	over map[string]string
}

// Origin names where the setting key (a file key, or a dotted path into
// one, like extensions.webhook) was set, to start a message about it:
// "FILE:LINE: key", "--flag", "ATTESTATION_VAR", or key when it is a
// default or was set in code.
func (c *Config) Origin(key string) string {
	o := c.origin
	top, _, _ := strings.Cut(strings.SplitN(key, "[", 2)[0], ".")
	if name, ok := o.over[top]; ok {
		return name
	}
	// A key the file does not name (pcr_policy.worker.24 for a PCR index
	// written 0x18) is told by its nearest parent that it does.
	for k := key; k != ""; k = parent(k) {
		if line, ok := o.lines[k]; ok {
			return fmt.Sprintf("%s:%d: %s", o.file, line, key)
		}
	}
	return key
}

// parent is the dotted path one level up: "" for a top-level key.
func parent(key string) string {
	if i := strings.LastIndexAny(key, ".["); i >= 0 {
		return key[:i]
	}
	return ""
}

// A keyError is about one setting, named by its file key (a dotted path
// for a nested one); Validate starts it with where the setting was set.
type keyError struct {
	key, msg string
}

func (e *keyError) Error() string { return e.key + ": " + e.msg }

func bad(key, format string, args ...any) error {
	return &keyError{key: key, msg: fmt.Sprintf(format, args...)}
}

// fileDecoder decodes a config file's YAML into a Config.
type fileDecoder struct {
	path  string
	lines map[string]int
}

// errorf is an error about the node at key.
func (d *fileDecoder) errorf(n *yaml.Node, key, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s: %s", d.path, n.Line, key, fmt.Sprintf(format, args...))
}

// retired are the keys of settings that were removed, and why: a file
// that still sets one is told so rather than that the key is unknown.
var retired = map[string]string{
	"max_challenges":            "attestation challenges are sealed tokens the agents carry and take no room on the control plane; register_rate bounds them per source",
	"max_challenges_per_source": "attestation challenges are sealed tokens the agents carry and take no room on the control plane; register_rate bounds them per source",
}

// loadFile sets what the YAML file at path says. Every error names the
// file and, for a key, its line and dotted path, in YAML's terms.
func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	d := &fileDecoder{path: path, lines: map[string]int{}}
	c.origin.file, c.origin.lines = path, d.lines
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil // empty, or only comments
	} else if err != nil {
		return d.syntaxError(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return fmt.Errorf("%s:%d: a second YAML document (after ---): put every setting in one", path, next.Line)
	} else if !errors.Is(err, io.EOF) {
		return d.syntaxError(err)
	}
	root := resolve(doc.Content[0])
	if root.ShortTag() == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want settings as key: value lines, got %s", path, root.Line, describe(root))
	}
	keys, fields := fileKeys()
	return d.mapping(root, "", func(k, v *yaml.Node, key string) error {
		i, ok := fields[key]
		if why, gone := retired[key]; !ok && gone {
			return fmt.Errorf("%s:%d: %s is no longer a setting: %s; remove it", path, k.Line, key, why)
		}
		if !ok {
			return fmt.Errorf("%s:%d: unknown key %q (%s)", path, k.Line, key, suggest(key, keys))
		}
		if v.ShortTag() == "!!null" {
			return nil // "key:" with no value keeps the default
		}
		field := reflect.ValueOf(c).Elem().Field(i)
		s, isSetting := settingOf(key)
		switch {
		case isSetting && v.Kind == yaml.ScalarNode:
			// Parsed as its flag and variable are, numbers as YAML
			// writes them (0x10, 1_000) too.
			text := v.Value
			if k := field.Kind(); (k == reflect.Int || k == reflect.Int64) && v.ShortTag() == "!!int" {
				var n int64
				if v.Decode(&n) == nil {
					text = strconv.FormatInt(n, 10)
				}
			}
			if err := s.set(c, text); err != nil {
				return d.errorf(v, key, "%v", err)
			}
			return nil
		case isSetting && field.Kind() != reflect.Slice && field.Kind() != reflect.Map:
			return d.errorf(v, key, "want %s, got %s", kindName(field.Type()), describe(v))
		}
		return d.value(v, field, key)
	})
}

// syntaxError puts yaml's "yaml: line N: msg" as "FILE:N: YAML syntax: msg".
func (d *fileDecoder) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if slices.ContainsFunc(parserProblems, func(p string) bool { return strings.HasPrefix(msg, p) }) {
		line++
	}
	if line == 0 {
		return fmt.Errorf("%s: YAML syntax: %s", d.path, msg)
	}
	return fmt.Errorf("%s:%d: YAML syntax: %s", d.path, line, msg)
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// parserProblems are the errors of yaml's parser, which numbers lines
// from 0 (its scanner numbers them from 1, and its parser leaves line 0
// out): see parser.fail in go.yaml.in/yaml/v3.
var parserProblems = []string{
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"did not find expected '-' indicator", "did not find expected <document start>",
	"did not find expected key", "did not find expected node content",
	"found incompatible YAML document", "found duplicate %", "found undefined tag handle",
}

// mapping calls f with every key and value of the mapping n, keys as
// dotted paths under path, refusing keys that are not plain values or
// that repeat.
func (d *fileDecoder) mapping(n *yaml.Node, path string, f func(k, v *yaml.Node, key string) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: %s: a key must be a plain value, got %s", d.path, k.Line, orTop(path), describe(k))
		}
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		if line, dup := seen[k.Value]; dup {
			return fmt.Errorf("%s:%d: %s: set twice (first at line %d)", d.path, k.Line, key, line)
		}
		seen[k.Value] = k.Line
		d.lines[key] = k.Line
		if err := f(k, v, key); err != nil {
			return err
		}
	}
	return nil
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

// value decodes n into v, the field or element at key: the lists and
// maps only the file sets (ek_allowlist, pcr_policy, ...) and their
// strings; extensions' sections become JSON.
func (d *fileDecoder) value(n *yaml.Node, v reflect.Value, key string) error {
	if v.Type() == rawJSON {
		x, err := d.jsonValue(n, key)
		if err != nil {
			return err
		}
		b, err := json.Marshal(x)
		if err != nil {
			return d.errorf(n, key, "%v", err)
		}
		v.SetBytes(b)
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
			return d.errorf(n, key, "want a string, got %s", describe(n))
		}
		// The text as written: an all-digit PCR value is not a number.
		v.SetString(n.Value)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, key, "want a list, got %s", describe(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			d.lines[k] = e.Line
			if err := d.value(resolve(e), s.Index(i), k); err != nil {
				return err
			}
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.errorf(n, key, "want a mapping (key: value), got %s", describe(n))
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		err := d.mapping(n, key, func(k, e *yaml.Node, path string) error {
			mk := reflect.New(v.Type().Key()).Elem()
			if mk.Kind() == reflect.Int {
				i, err := strconv.Atoi(k.Value)
				if err != nil {
					return d.errorf(k, path, "want a whole number as the key, got %s", describe(k))
				}
				mk.SetInt(int64(i))
			} else {
				mk.SetString(k.Value)
			}
			me := reflect.New(v.Type().Elem()).Elem()
			if err := d.value(e, me, path); err != nil {
				return err
			}
			m.SetMapIndex(mk, me)
			return nil
		})
		if err != nil {
			return err
		}
		v.Set(m)
	default:
		return d.errorf(n, key, "cannot be set in the file") // a new field's type wants a case here
	}
	return nil
}

var rawJSON = reflect.TypeFor[json.RawMessage]()

// jsonValue is n as a value encoding/json writes: an extension decodes
// its section from JSON.
func (d *fileDecoder) jsonValue(n *yaml.Node, key string) (any, error) {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		err := d.mapping(n, key, func(k, v *yaml.Node, path string) error {
			x, err := d.jsonValue(v, path)
			m[k.Value] = x
			return err
		})
		return m, err
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, e := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			d.lines[k] = e.Line
			x, err := d.jsonValue(resolve(e), k)
			if err != nil {
				return nil, err
			}
			s[i] = x
		}
		return s, nil
	}
	var x any
	if err := n.Decode(&x); err != nil {
		return nil, d.errorf(n, key, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if f, ok := x.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
		return nil, d.errorf(n, key, "%s is not a number JSON can hold", n.Value)
	}
	return x, nil
}

// resolve follows an alias (*name) to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names what n is, for "want X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping (key: value)"
	}
	switch n.ShortTag() {
	case "!!null":
		return "nothing"
	case "!!str":
		return strconv.Quote(n.Value)
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	}
	return n.ShortTag() + " " + strconv.Quote(n.Value)
}

// kindName says what a setting's value is, for "want X, got Y".
func kindName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration]():
		return "a duration like 10s or 1m30s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a string"
}

// fileKeys lists the file keys in the order of Config, which groups
// related ones, and maps each to its field's index.
func fileKeys() ([]string, map[string]int) {
	t := reflect.TypeFor[Config]()
	var keys []string
	fields := map[string]int{}
	for i := range t.NumField() {
		if key := t.Field(i).Tag.Get("yaml"); key != "" {
			keys = append(keys, key)
			fields[key] = i
		}
	}
	return keys, fields
}

// settingOf is the flag and variable of a file key, when it has them.
func settingOf(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// suggest names the known key closest to a misspelt one, or lists them.
func suggest(key string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := distance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return "did you mean " + best + "?"
	}
	return "known keys: " + strings.Join(keys, ", ")
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
