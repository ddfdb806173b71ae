package version

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "GOOS", Value: "linux"},
		{Key: "GOARCH", Value: "arm64"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0e03418f9c2b7d6e5a4f3c2b1a0e9d8c7b6a5f4e"},
		{Key: "vcs.time", Value: "2025-06-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	committed := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		want    Info
	}{
		{
			name:    "stamped wins over the module version",
			stamped: "v0.3.0-12-g0e03418-dirty",
			bi:      &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}, Settings: vcs},
			want: Info{Version: "v0.3.0-12-g0e03418-dirty", Revision: "0e03418f9c2b7d6e5a4f3c2b1a0e9d8c7b6a5f4e",
				Time: committed, Modified: true, GoVersion: "go1.26.8", Platform: "linux/arm64"},
		},
		{
			name: "module version without a stamp",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20250601100000-0e03418f9c2b+dirty"}},
			want: Info{Version: "v0.0.0-20250601100000-0e03418f9c2b+dirty", GoVersion: "go1.26.8", Platform: runtime.GOOS + "/" + runtime.GOARCH},
		},
		{
			name: "(devel) is no version",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs[3:4]},
			want: Info{Version: Devel, Revision: "0e03418f9c2b7d6e5a4f3c2b1a0e9d8c7b6a5f4e", GoVersion: "go1.26.8", Platform: runtime.GOOS + "/" + runtime.GOARCH},
		},
		{
			name: "no build information",
			want: Info{Version: Devel, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := FromBuildInfo(c.stamped, c.bi); got != c.want {
				t.Errorf("FromBuildInfo(%q, ...) = %+v, want %+v", c.stamped, got, c.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	full := Info{
		Version:   "v0.3.0-12-g0e03418-dirty",
		Revision:  "0e03418f9c2b7d6e5a4f3c2b1a0e9d8c7b6a5f4e",
		Time:      time.Date(2025, 6, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600)),
		Modified:  true,
		GoVersion: "go1.26.8",
		Platform:  "linux/amd64",
	}
	bare := Info{Version: Devel, GoVersion: "go1.26.8", Platform: "linux/amd64"}
	for _, c := range []struct {
		name    string
		info    Info
		program string
		exts    []Extension
		want    string
	}{
		{
			name: "everything known, with extensions", info: full, program: "attestationd",
			exts: []Extension{{Name: "tags", Version: "1.0.0"}, {Name: "webhook", Version: "v1.2.0-rc.1"}},
			want: "attestationd v0.3.0-12-g0e03418-dirty (revision 0e03418f9c2b7d6e5a4f3c2b1a0e9d8c7b6a5f4e, 2025-06-01T10:00:00Z, modified)\n" +
				"go1.26.8 linux/amd64\n" +
				"extensions: tags v1.0.0, webhook v1.2.0-rc.1\n",
		},
		{
			name: "no extensions compiled in", info: bare, program: "attestation", exts: []Extension{},
			want: "attestation devel\ngo1.26.8 linux/amd64\nextensions: none\n",
		},
		{
			name: "a binary without extensions", info: bare, program: "attestation-agent",
			want: "attestation-agent devel\ngo1.26.8 linux/amd64\n",
		},
		{
			name: "revision only, unmodified", program: "attestation-agent",
			info: Info{Version: "v0.3.0", Revision: "abc", GoVersion: "go1.26.8", Platform: "linux/amd64"},
			want: "attestation-agent v0.3.0 (revision abc)\ngo1.26.8 linux/amd64\n",
		},
		{
			name: "an extension without a version", info: bare, program: "attestationd", exts: []Extension{{Name: "tags"}},
			want: "attestationd devel\ngo1.26.8 linux/amd64\nextensions: tags\n",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.info.Format(c.program, c.exts); got != c.want {
				t.Errorf("Format:\ngot  %q\nwant %q", got, c.want)
			}
		})
	}
}

// A test binary carries build information; its Go version is the one
// running.
func TestGet(t *testing.T) {
	got := Get()
	if got.Version == "" || got.GoVersion != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Get() = %+v, want a version, Go %s on %s/%s", got, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
}
