package tftp

import (
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "undionly.kpxe", "undionly.kpxe", true},
		{"subdir", "pxelinux.cfg/default", "pxelinux.cfg/default", true},
		{"dot and double slash", "./a//b", "a/b", true},
		{"empty", "", "", false},
		{"dot", ".", "", false},
		{"parent", "../etc/passwd", "", false},
		{"parent inside", "a/../../etc/passwd", "", false},
		{"parent that stays inside", "a/../b", "", false},
		{"bare parent", "..", "", false},
		{"absolute", "/etc/passwd", "", false},
		{"backslash", `..\etc\passwd`, "", false},
		{"nul", "a\x00b", "", false},
		{"newline", "a\nb", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cleanName(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("cleanName(%q) error %v, want ok %v", tc.in, err, tc.ok)
			}
			if got != tc.want {
				t.Errorf("cleanName(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "../etc/passwd", "/etc/passwd", "a/./b//c", "a/..", `a\b`, "...", "a/.../b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := cleanName(name)
		if err != nil {
			return
		}
		if !filepath.IsLocal(got) || strings.HasPrefix(got, "/") || strings.Contains(got, `\`) {
			t.Fatalf("cleanName(%q) = %q: not a local path", name, got)
		}
		for el := range strings.SplitSeq(got, "/") {
			if el == ".." || el == "." || el == "" {
				t.Fatalf("cleanName(%q) = %q: has element %q", name, got, el)
			}
		}
		if path.Clean(got) != got {
			t.Fatalf("cleanName(%q) = %q: not clean", name, got)
		}
		if again, err := cleanName(got); err != nil || again != got {
			t.Fatalf("cleanName(%q) = %q, %v: want %q again", got, again, err, got)
		}
	})
}
