package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// pathRule is a REST route whose whole body is the request message
// (body: "*") and whose path names fields too: /api/v1/configs/{role}.
type pathRule struct {
	method string
	// segments are the path's segments; a variable is "{name}".
	segments []string
	// jsonNames are each variable's field's JSON name (roleName for
	// role_name), which a body may use as well.
	jsonNames map[string]string
}

// pathRules reads the REST routes of the services from their google.api.http
// options: those a body can contradict.
func pathRules(services []string) ([]pathRule, error) {
	var rules []pathRule
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil || rule.GetBody() != "*" {
				continue
			}
			method, path := "", ""
			switch p := rule.GetPattern().(type) {
			case *annotations.HttpRule_Post:
				method, path = http.MethodPost, p.Post
			case *annotations.HttpRule_Put:
				method, path = http.MethodPut, p.Put
			case *annotations.HttpRule_Patch:
				method, path = http.MethodPatch, p.Patch
			default:
				continue
			}
			r := pathRule{method: method, segments: strings.Split(strings.Trim(path, "/"), "/"), jsonNames: map[string]string{}}
			for _, s := range r.segments {
				if v, ok := strings.CutPrefix(s, "{"); ok {
					v = strings.TrimSuffix(v, "}")
					if f := m.Input().Fields().ByName(protoreflect.Name(v)); f != nil {
						r.jsonNames[v] = f.JSONName()
					}
				}
			}
			if len(r.jsonNames) > 0 {
				rules = append(rules, r)
			}
		}
	}
	return rules, nil
}

// match returns the path's variables when it is this rule's route.
func (r pathRule) match(method, path string) (map[string]string, bool) {
	if method != r.method {
		return nil, false
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) != len(r.segments) {
		return nil, false
	}
	vars := map[string]string{}
	for i, s := range r.segments {
		if v, ok := strings.CutPrefix(s, "{"); ok {
			vars[strings.TrimSuffix(v, "}")] = segs[i]
		} else if s != segs[i] {
			return nil, false
		}
	}
	return vars, true
}

// contradiction checks a REST request against the rules: a body that sets
// a field the path sets too, to another value, is the caller's mistake,
// which would otherwise be settled silently for one of them. It returns
// what is wrong ("" when nothing is), leaving the body readable.
func contradiction(rules []pathRule, r *http.Request) string {
	for _, rule := range rules {
		vars, ok := rule.match(r.Method, r.URL.Path)
		if !ok || r.Body == nil || r.Body == http.NoBody {
			continue
		}
		b, err := io.ReadAll(r.Body) // at most the body limit
		r.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			return ""
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(b, &fields) != nil {
			return "" // the transcoder says what is wrong with it
		}
		for name, value := range vars {
			for _, key := range []string{name, rule.jsonNames[name]} {
				raw, ok := fields[key]
				if !ok {
					continue
				}
				var got string
				if json.Unmarshal(raw, &got) != nil || got != value {
					return fmt.Sprintf("field %q of the body is %s but the path says %q: leave it out or make them agree", key, raw, value)
				}
			}
		}
		return ""
	}
	return ""
}
