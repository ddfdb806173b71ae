package configs

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// plainDefault writes the default config of m as go.yaml.in/yaml/v2
// writes it, byte for byte, without the encoder's reflection and buffers,
// when every value is made of the characters of IDs, fingerprints,
// hostnames, MACs and addresses: ASCII letters, digits, '.', ':' and '-'.
// Such a value goes out plain, or double-quoted where YAML would read it
// plain as something other than a string (a number, a boolean, a date);
// the rules below are the encoder's own (encode.go stringv, resolve.go,
// emitterc.go analyze_scalar), for those characters only. It reports
// false for anything else (a space, an empty value it would have to
// place, a value the emitter would single-quote), which yaml.Marshal
// then writes. TestPlainDefaultMatchesYAML and FuzzPlainDefault hold it
// to yaml.Marshal.
func plainDefault(m Machine) ([]byte, bool) {
	var b []byte
	ok := true
	field := func(key, v string, omitEmpty bool) {
		if !ok || omitEmpty && v == "" {
			return
		}
		s, good := plainScalar(v)
		if !good {
			ok = false
			return
		}
		b = append(append(append(append(b, key...), ": "...), s...), '\n')
	}
	b = make([]byte, 0, 512)
	field("ek_fingerprint", m.EKFingerprint, false)
	field("hostname", m.Hostname, false)
	field("id", m.ID, false)
	field("ip", m.IP, true)
	if ok {
		if len(m.MACs) == 0 {
			b = append(b, "macs: []\n"...)
		} else {
			b = append(b, "macs:\n"...)
			for _, mac := range m.MACs {
				s, good := plainScalar(mac)
				if !good {
					return nil, false
				}
				b = append(append(append(b, "- "...), s...), '\n')
			}
		}
	}
	field("product", m.Product, true)
	field("role", m.Role, false)
	field("schematic_id", m.SchematicID, true)
	field("serial", m.Serial, true)
	field("smbios_uuid", m.SMBIOSUUID, true)
	return b, ok
}

// plainScalar is s as the encoder writes a string value in block
// context, if s is made of plainChars only.
func plainScalar(s string) (string, bool) {
	if s == "" {
		return `""`, true // it would read back as null
	}
	for i := range len(s) {
		if !plainChar(s[i]) {
			return "", false
		}
	}
	// The emitter's indicators (analyze_scalar): a document marker, a
	// lone "-", a ':' before the end. Plain is refused then and the value
	// single-quoted: left to the encoder.
	if strings.HasPrefix(s, "---") || strings.HasPrefix(s, "...") || s == "-" || s[len(s)-1] == ':' {
		return "", false
	}
	if readsAsNonString(s) || isBase60Float(s) {
		return `"` + s + `"`, true // no character of s needs escaping
	}
	return s, true
}

func plainChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == ':' || c == '-'
}

// yamlWords are the plain scalars the encoder's resolver reads as
// booleans, null, infinities and NaN (resolve.go resolveMapList), as far
// as they are made of plainChars.
var yamlWords = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true,
	"true": true, "True": true, "TRUE": true,
	"on": true, "On": true, "ON": true,
	"n": true, "N": true, "no": true, "No": true, "NO": true,
	"false": true, "False": true, "FALSE": true,
	"off": true, "Off": true, "OFF": true,
	"null": true, "Null": true, "NULL": true,
	".nan": true, ".NaN": true, ".NAN": true,
	".inf": true, ".Inf": true, ".INF": true,
	"-.inf": true, "-.Inf": true, "-.INF": true,
}

var (
	yamlStyleFloat = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
	base60Float    = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`)
	yamlTimestamps = []string{"2006-1-2T15:4:5.999999999Z07:00", "2006-1-2t15:4:5.999999999Z07:00", "2006-1-2 15:4:5.999999999", "2006-1-2"}
)

// readsAsNonString reports whether the resolver reads plain s (non-empty,
// plainChars only) as anything but a string (resolve.go resolve, for a
// value without a tag). Its hint is the first character: a digit or a
// sign may start a number or a date, '.' a float, and a few letters a
// word; any other first character makes a string.
func readsAsNonString(s string) bool {
	switch c := s[0]; {
	case c == '-' || '0' <= c && c <= '9':
		if yamlWords[s] {
			return true
		}
		if isTimestamp(s) {
			return true
		}
		if _, err := strconv.ParseInt(s, 0, 64); err == nil {
			return true
		}
		if _, err := strconv.ParseUint(s, 0, 64); err == nil {
			return true
		}
		if yamlStyleFloat.MatchString(s) {
			if _, err := strconv.ParseFloat(s, 64); err == nil {
				return true
			}
		}
		if rest, ok := strings.CutPrefix(s, "0b"); ok {
			if _, err := strconv.ParseInt(rest, 2, 64); err == nil {
				return true
			}
			if _, err := strconv.ParseUint(rest, 2, 64); err == nil {
				return true
			}
		} else if rest, ok := strings.CutPrefix(s, "-0b"); ok {
			if _, err := strconv.ParseInt("-"+rest, 2, 64); err == nil {
				return true
			}
		}
		return false
	case c == '.':
		if yamlWords[s] {
			return true
		}
		_, err := strconv.ParseFloat(s, 64)
		return err == nil
	case strings.IndexByte("yYnNtTfFoO", c) >= 0:
		return yamlWords[s]
	}
	return false
}

// isTimestamp is the resolver's parseTimestamp: YYYY- then one of its
// layouts.
func isTimestamp(s string) bool {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i != 4 || i == len(s) || s[i] != '-' {
		return false
	}
	for _, layout := range yamlTimestamps {
		if _, err := time.Parse(layout, s); err == nil {
			return true
		}
	}
	return false
}

// isBase60Float is the encoder's: such values are quoted, though the
// resolver reads them as strings.
func isBase60Float(s string) bool {
	c := s[0]
	if !(c == '+' || c == '-' || '0' <= c && c <= '9') || strings.IndexByte(s, ':') < 0 {
		return false
	}
	return base60Float.MatchString(s)
}
