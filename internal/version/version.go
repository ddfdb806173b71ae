// Package version says which build a binary is, for --version and for the
// agent's registration: the version the build stamped (make stamps the
// output of `git describe --tags --always --dirty`), else what the Go
// toolchain recorded in the binary (module version, VCS revision and time,
// whether the tree was modified), else "devel".
//
// It imports nothing of the module, so that the static agent can use it
// as well as attestationd and attestation.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Version is stamped at build time:
//
//	go build -ldflags "-X github.com/attestation/attestation/internal/version.Version=$(git describe --tags --always --dirty)"
//
// Left empty, Get falls back to the build information.
var Version string

// Devel is the version of a build that knows nothing better.
const Devel = "devel"

// Info is what a binary knows about its own build.
type Info struct {
	// Version is the stamped version, else the main module's version,
	// else Devel.
	Version string
	// Revision is the VCS revision the binary was built from (vcs.revision),
	// empty when unknown.
	Revision string
	// Time is the revision's commit time (vcs.time), zero when unknown. Go
	// records no build time, so that the same source builds the same
	// binary.
	Time time.Time
	// Modified: the working tree had changes not in Revision (vcs.modified).
	Modified bool
	// GoVersion is the toolchain that built the binary, like go1.26.8.
	GoVersion string
	// Platform is GOOS/GOARCH.
	Platform string
}

// Get returns this binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo() // nil without build information
	return FromBuildInfo(Version, bi)
}

// String is this binary's version alone, like v0.3.0-12-gabc1234.
func String() string { return Get().Version }

// FromBuildInfo is the Info of a binary stamped with stamped (may be empty)
// and built as bi says (nil when the binary carries no build information).
func FromBuildInfo(stamped string, bi *debug.BuildInfo) Info {
	i := Info{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		var goos, goarch string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Revision = s.Value
			case "vcs.time":
				i.Time, _ = time.Parse(time.RFC3339, s.Value)
			case "vcs.modified":
				i.Modified = s.Value == "true"
			case "GOOS":
				goos = s.Value
			case "GOARCH":
				goarch = s.Value
			}
		}
		if goos != "" && goarch != "" {
			i.Platform = goos + "/" + goarch
		}
	}
	if i.Version == "" {
		i.Version = Devel
	}
	return i
}

// Extension is an extension compiled into a binary, as Format lists it.
type Extension struct {
	Name    string
	Version string // semantic version, with or without a leading v
}

// Format is program's --version text, one block:
//
//	attestationd v0.3.0-12-gabc1234 (revision abc1234def5678abc1234def5678abc1234def56, 2025-06-01T10:00:00Z, modified)
//	go1.26.8 linux/amd64
//	extensions: tags v1.0.0, webhook v1.0.0
//
// The parenthesis holds what the build information knows. exts are the
// compiled-in extensions; nil leaves their line out, for a binary that
// cannot have any (the agent).
func (i Info) Format(program string, exts []Extension) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", program, i.Version)
	var build []string
	if i.Revision != "" {
		build = append(build, "revision "+i.Revision)
	}
	if !i.Time.IsZero() {
		build = append(build, i.Time.UTC().Format(time.RFC3339))
	}
	if i.Modified {
		build = append(build, "modified")
	}
	if len(build) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(build, ", "))
	}
	fmt.Fprintf(&b, "\n%s %s\n", i.GoVersion, i.Platform)
	if exts != nil {
		names := make([]string, len(exts))
		for n, e := range exts {
			names[n] = e.Name
			if e.Version != "" {
				names[n] += " v" + strings.TrimPrefix(e.Version, "v")
			}
		}
		if len(names) == 0 {
			names = []string{"none"}
		}
		fmt.Fprintf(&b, "extensions: %s\n", strings.Join(names, ", "))
	}
	return b.String()
}
