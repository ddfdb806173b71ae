// Package extension is a test extension served by a module proxy at a
// version, in a package below its module's root.
package extension

import "github.com/attestation/attestation/extensions"

func init() { extensions.Register(Extension{}) }

// Extension is the rack extension.
type Extension struct{}

func (Extension) Info() extensions.Info {
	return extensions.Info{Name: "rack", Version: "0.3.0", Description: "Test extension fetched from a module proxy"}
}
