// Package tags lets operators label machines with tags: rack=r12,
// owner=storage, or a bare key like gpu. It serves a REST API under
// /api/v1/tags/ and adds the command group "attestation tag". A machine has
// each key once; adding a key again changes its value.
//
// It ships with the product and is also the worked example for authors of
// third-party extensions, so it stays small, one capability per file:
//
//   - tags.go: registration from init (nothing else happens there),
//     Provision (keep the host's database and logger, refuse settings it
//     does not take) and the migrations embedded from migrations/, whose
//     tables and indexes are all named extension_tags_*;
//   - api.go: the routes, which the daemon mounts behind operator
//     authentication, answering errors in the core REST API's JSON shape;
//   - cli.go: the commands, which call those routes with the URL, token and
//     output format of the attestation CLI;
//   - tags_test.go: tests through the front door with package
//     extensiontest, a real daemon and the real CLI.
//
// It handles no events (a decommissioned machine stays as a tombstone, and
// its tags with it) and has nothing to start or stop.
//
// The binaries are built with it by one blank import in package
// extensions/all:
//
//	import _ "github.com/attestation/attestation/extensions/tags"
package tags

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/attestation/attestation/extensions"
)

func init() {
	extensions.Register(&Extension{})
}

// The capabilities Extension implements, checked at compile time.
var (
	_ extensions.Provisioner = (*Extension)(nil)
	_ extensions.Migrator    = (*Extension)(nil)
	_ extensions.Router      = (*Extension)(nil)
	_ extensions.Commander   = (*Extension)(nil)
)

// Extension is the tags extension. The zero value is ready for the host:
// the daemon provisions it before serving its routes; the CLI needs only
// Commands.
type Extension struct {
	db  *sql.DB
	log *slog.Logger
}

// Info implements extensions.Extension.
func (*Extension) Info() extensions.Info {
	return extensions.Info{
		Name:        "tags",
		Version:     "1.0.0",
		Description: "Key=value tags on machines, like rack=r12 or owner=storage",
	}
}

// Provision keeps the database and logger. Tags takes no settings: a
// config file section other than an empty one is refused, so that a typo
// there does not pass for a setting.
func (e *Extension) Provision(_ context.Context, host *extensions.Host) error {
	if host.Config != nil {
		dec := json.NewDecoder(bytes.NewReader(host.Config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&struct{}{}); err != nil {
			return fmt.Errorf("settings (extensions: tags:): it takes none: %w", err)
		}
	}
	e.db, e.log = host.DB, host.Logger
	return nil
}

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Migrations implements extensions.Migrator.
func (*Extension) Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above: cannot happen
	}
	return sub
}
