package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/attestation/attestation/images/schematic"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func schematicsCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "schematics",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
		Aliases: []string{"schematic"},
		Short:   "Create, show and list schematics: what a machine boots",
		Long: `A schematic is a small YAML or JSON document saying what a machine boots:

  kernel_args: [console=ttyS0]          # added to the kernel command line
  agent:
    url: http://10.0.0.1:9000           # the control plane, as the machine reaches it
    ca: |                               # PEM certificates the agent trusts for https
      -----BEGIN CERTIFICATE-----
      ...
    tpm: required                       # or optional
  modules: [mlx5_core]                  # kernel modules besides the NIC drivers
  files:                                # extra files of the initramfs
    - {path: etc/motd, content: "hello", mode: "0644"}
  labels: {rack: a1}
  boot: network                         # or disk (the default)

Its ID is the hex SHA-256 of its canonical form: the same content has the
same ID whatever its key order or format, and creating it again changes
nothing. Approve a machine with it: attestation machines approve ID
--schematic SCHEMATIC_ID. (Quote YAML values like y, no or 0644 that YAML
would read as booleans or numbers.)`,
		Example: `  attestation schematics create -f worker.yaml
  attestation schematics show 5d2f0c1b...
  attestation schematics list`,
	}
	cmd.AddCommand(schematicsCreateCommand(env), schematicsShowCommand(env), schematicsListCommand(env))
	return cmd
}

func schematicsCreateCommand(env *Env) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a schematic from a YAML or JSON file and print its ID",
		Long: `Create a schematic from FILE (- for standard input), YAML or JSON. The file is
checked here first, strictly (an unknown field, a wrong type, a path with ..:
an error naming the field), and again by the daemon, which also refuses a
module its boot assets' kernel does not have. Creating a schematic that
exists prints its ID and changes nothing.

The fields: kernel_args (a list), agent (url, ca: PEM, tpm: required or
optional), modules (kernel modules beyond the default NIC drivers), files
(path, content, mode), labels (a map), boot (disk, the default, or network:
a provisioned machine network-boots the schematic's image). Images are
public to whoever knows the ID: no secrets in files.`,
		Example: `  attestation schematics create -f worker.yaml
  printf 'kernel_args: [console=ttyS0]\nboot: network\nmodules: [dummy]\n' | attestation schematics create -f -`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &usageError{fmt.Errorf("-f FILE is required")}
			}
			var (
				b   []byte
				err error
			)
			if file == "-" {
				b, err = io.ReadAll(io.LimitReader(env.Stdin, schematic.MaxSize+1))
			} else {
				b, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("read schematic: %w", err)
			}
			sc, err := schematic.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			doc := &structpb.Struct{}
			if err := doc.UnmarshalJSON(sc.Canonical()); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			resp, err := env.Schematics().CreateSchematic(cmd.Context(), connect.NewRequest(&attestationv1.CreateSchematicRequest{Schematic: doc}))
			if err != nil {
				return err
			}
			return env.Print(resp.Msg, func(w io.Writer) error {
				what := "Created"
				if !resp.Msg.Created {
					what = "Exists already:"
				}
				_, err := fmt.Fprintf(w, "%s schematic %s\n", what, resp.Msg.Id)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the schematic, YAML or JSON (- for standard input)")
	return cmd
}

func schematicsShowCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Print a schematic (YAML; -o json for JSON)",
		Example: `  attestation schematics show 5d2f0c1b8e4a7f3d9c6b2a1e0f8d7c6b5a4e3d2c1b0a9f8e7d6c5b4a3e2d1c0b`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Schematics().GetSchematic(cmd.Context(), connect.NewRequest(&attestationv1.GetSchematicRequest{Id: strings.ToLower(args[0])}))
			if err != nil {
				return err
			}
			s := resp.Msg.Schematic
			return env.Print(s, func(w io.Writer) error {
				j, err := s.Schematic.MarshalJSON()
				if err != nil {
					return err
				}
				y, err := yaml.JSONToYAML(j)
				if err != nil {
					return err
				}
				_, err = w.Write(y)
				return err
			})
		},
	}
}

func schematicsListCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the schematics",
		Example: `  attestation schematics list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := env.Schematics().ListSchematics(cmd.Context(), connect.NewRequest(&attestationv1.ListSchematicsRequest{}))
			if err != nil {
				return err
			}
			ss := resp.Msg.Schematics
			return env.printList(messages(ss), len(ss), "schematics", func(w io.Writer) error {
				tw := newTable(w)
				fmt.Fprintln(tw, "ID\tBOOT\tLABELS\tCREATED")
				for _, s := range ss {
					m := s.Schematic.AsMap()
					boot, _ := m["boot"].(string)
					var labels []string
					if l, ok := m["labels"].(map[string]any); ok {
						for k, v := range l {
							labels = append(labels, fmt.Sprintf("%s=%v", k, v))
						}
					}
					slices.Sort(labels)
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Id, orDash(boot), orDash(strings.Join(labels, ",")), formatTime(s.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
}
