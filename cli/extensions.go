package cli

import (
	"fmt"
	"io"
	"sort"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func extensionsCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "extensions",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
		Aliases: []string{"extension"},
		Short:   "Show the extensions loaded in the daemon",
		Example: `  attestation extensions list`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the daemon's extensions",
		Long: `List the extensions compiled into the daemon, with their version, status
("running", or why the extension failed to start) and description. With
-o json or -o yaml they are an object keyed by name.`,
		Example: `  attestation extensions list
  attestation extensions list -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := env.Extensions().ListExtensions(cmd.Context(), connect.NewRequest(&attestationv1.ListExtensionsRequest{}))
			if err != nil {
				return err
			}
			exts := resp.Msg.Extensions
			byName := make(map[string]proto.Message, len(exts))
			for name, info := range exts {
				byName[name] = info
			}
			return env.printList(byName, len(exts), "extensions compiled into the daemon", func(w io.Writer) error { return extensionTable(w, exts) })
		},
	})
	return cmd
}

func extensionTable(w io.Writer, exts map[string]*attestationv1.ExtensionInfo) error {
	names := make([]string, 0, len(exts))
	for name := range exts {
		names = append(names, name)
	}
	sort.Strings(names)
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATUS\tDESCRIPTION")
	for _, name := range names {
		e := exts[name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, orDash(e.Version), orDash(e.Status), e.Description)
	}
	return tw.Flush()
}
