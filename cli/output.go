package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/attestation/attestation/extensions"
)

// jsonOptions write the proto field names and every field, as the REST
// API does, so that scripts see the same keys either way.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// Print writes data in the chosen output format. data is a proto.Message,
// a []proto.Message (printed as a JSON array), a map[string]proto.Message
// (a JSON object), or any value encoding/json takes; table writes the
// table form.
func (e *Env) Print(data any, table func(w io.Writer) error) error {
	switch e.Output {
	case OutputJSON, OutputYAML:
		b, err := marshal(data, e.Output, true)
		if err != nil {
			return err
		}
		_, err = e.Stdout.Write(b)
		return err
	}
	return table(e.Stdout)
}

// marshal renders data as indented JSON or as YAML. protojson varies its
// whitespace on purpose; re-indenting its compact form makes the output
// stable.
func marshal(data any, format string, indent bool) ([]byte, error) {
	raw, err := marshalJSON(data)
	if err != nil {
		return nil, err
	}
	if format == OutputYAML {
		return yaml.JSONToYAML(raw)
	}
	var buf bytes.Buffer
	if indent {
		err = json.Indent(&buf, raw, "", "  ")
	} else {
		err = json.Compact(&buf, raw)
	}
	if err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func marshalJSON(data any) ([]byte, error) {
	switch v := data.(type) {
	case proto.Message:
		return jsonOptions.Marshal(v)
	case []proto.Message:
		buf := []byte{'['}
		for i, m := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			b, err := jsonOptions.Marshal(m)
			if err != nil {
				return nil, err
			}
			buf = append(buf, b...)
		}
		return append(buf, ']'), nil
	case map[string]proto.Message:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		buf := []byte{'{'}
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			kb, _ := json.Marshal(k)
			b, err := jsonOptions.Marshal(v[k])
			if err != nil {
				return nil, err
			}
			buf = append(append(append(buf, kb...), ':'), b...)
		}
		return append(buf, '}'), nil
	}
	// Anything else (extensions' own types) is printed by encoding/json.
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("cannot print %T: %w", data, err)
	}
	return b, nil
}

// messages converts a typed slice for Print.
func messages[T proto.Message](xs []T) []proto.Message {
	out := make([]proto.Message, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// newTable returns a tabwriter for aligned columns; flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// timeLayout is how tables show times: local time to the second.
const timeLayout = "2006-01-02 15:04:05"

// formatTime returns t in local time, or "-" when unset.
func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().In(time.Local).Format(timeLayout)
}

// orDash returns s, or "-" when it is empty, so table cells never vanish.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printList prints a list of n items called what ("machines") as every
// list of the CLI prints, extensions' included (extensions.PrintList).
func (e *Env) printList(data any, n int, what string, table func(w io.Writer) error) error {
	return extensions.PrintList(pluginCLI{env: e}, data, n, what, table)
}
