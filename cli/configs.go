package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func configsCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "configs",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
		Aliases: []string{"config"},
		Short:   "Set, show and list the per-role config templates",
		Long: `Every approved machine fetches a one-time config, rendered from the template
of its role: Go text/template over the machine's fields .ID, .Hostname, .Role,
.EKFingerprint, .MACs, .IP, .SchematicID, .SMBIOSUUID, .Serial and .Product,
with the function join (like {{join .MACs ","}}). A role without a template
gets the default config: those fields as YAML.`,
		Example: `  attestation configs set worker worker.yaml.tmpl
  attestation configs get worker
  attestation configs list
  attestation configs delete worker`,
	}
	cmd.AddCommand(configsSetCommand(env), configsGetCommand(env), configsListCommand(env), configsDeleteCommand(env))
	return cmd
}

func configsSetCommand(env *Env) *cobra.Command {
	var schematicID string
	cmd := &cobra.Command{
		Use:   "set ROLE FILE",
		Short: "Set the config template of a role",
		Long: `Set (or replace) the config template of a role from FILE, or from standard
input when FILE is -. The daemon refuses a template that does not parse or
does not render for a sample machine, and keeps the previous one.

--schematic names the role's default schematic: a machine approved with the
role and no --schematic of its own gets it. It must exist.`,
		Example: `  attestation configs set worker worker.yaml.tmpl
  echo 'hostname: {{.Hostname}}' | attestation configs set worker -`,
		Args: exactArgs("ROLE", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				b   []byte
				err error
			)
			if args[1] == "-" {
				b, err = io.ReadAll(env.Stdin)
			} else {
				b, err = os.ReadFile(args[1])
			}
			if err != nil {
				return fmt.Errorf("read template: %w", err)
			}
			resp, err := env.Configs().SetConfig(cmd.Context(), connect.NewRequest(&attestationv1.SetConfigRequest{
				Role: args[0], Template: string(b), SchematicId: strings.ToLower(schematicID)}))
			if err != nil {
				return err
			}
			c := resp.Msg.Config
			return env.Print(c, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Set the config template of role %s (%d bytes).\n", c.Role, len(c.Template))
				if err == nil && c.SchematicId != "" {
					_, err = fmt.Fprintf(w, "Machines approved as %s without a schematic get schematic %s.\n", c.Role, c.SchematicId)
				}
				return err
			})
		},
	}
	cmd.Flags().StringVar(&schematicID, "schematic", "", "the role's default schematic ID")
	return cmd
}

func configsGetCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "get ROLE",
		Short: "Print the config template of a role",
		Long: `Print the config template of a role as it was set; with -o json or -o yaml,
the template with its role and time of the last change.`,
		Example: `  attestation configs get worker > worker.yaml.tmpl`,
		Args:    exactArgs("ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Configs().GetConfig(cmd.Context(), connect.NewRequest(&attestationv1.GetConfigRequest{Role: args[0]}))
			if err != nil {
				return err
			}
			c := resp.Msg.Config
			return env.Print(c, func(w io.Writer) error {
				_, err := io.WriteString(w, c.Template)
				return err
			})
		},
	}
}

func configsDeleteCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ROLE",
		Short: "Delete the config template of a role",
		Long: `Delete the config template of a role: machines of the role that fetch their
config from then on get the default config (their fields as YAML), and the
role no longer has a default schematic. Machines keep their role.`,
		Example: `  attestation configs delete worker`,
		Args:    exactArgs("ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Configs().DeleteConfig(cmd.Context(), connect.NewRequest(&attestationv1.DeleteConfigRequest{Role: args[0]}))
			if err != nil {
				return err
			}
			c := resp.Msg.Config
			return env.Print(c, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Deleted the config template of role %s; its machines get the default config.\n", c.Role)
				return err
			})
		},
	}
}

func configsListCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the roles that have a config template",
		Example: `  attestation configs list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := env.Configs().ListConfigs(cmd.Context(), connect.NewRequest(&attestationv1.ListConfigsRequest{}))
			if err != nil {
				return err
			}
			cs := resp.Msg.Configs
			return env.printList(messages(cs), len(cs), "config templates", func(w io.Writer) error { return configTable(w, cs) })
		},
	}
}

func configTable(w io.Writer, cs []*attestationv1.ConfigTemplate) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ROLE\tLINES\tBYTES\tSCHEMATIC\tUPDATED")
	for _, c := range cs {
		lines := strings.Count(c.Template, "\n")
		if c.Template != "" && !strings.HasSuffix(c.Template, "\n") {
			lines++
		}
		schematic := orDash(c.SchematicId)
		if len(schematic) == 64 {
			schematic = schematic[:12]
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", c.Role, lines, len(c.Template), schematic, formatTime(c.UpdatedAt))
	}
	return tw.Flush()
}
