// Package cmdb is a test extension in a module of its own, added to a
// build from a local directory: it has a CLI command.
package cmdb

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/extensions"
)

func init() { extensions.Register(Extension{}) }

var _ extensions.Commander = Extension{}

// Extension is the cmdb extension.
type Extension struct{}

func (Extension) Info() extensions.Info {
	return extensions.Info{Name: "cmdb", Version: "1.2.0", Description: "Test extension built from a local directory"}
}

func (Extension) Commands(extensions.CLI) ([]*cobra.Command, error) {
	return []*cobra.Command{{
		Use:   "cmdb",
		Short: "Say the cmdb extension is here",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "cmdb extension compiled in")
			return err
		},
	}}, nil
}
