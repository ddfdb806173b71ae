package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func machinesCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "machines",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
		Aliases: []string{"machine"},
		Short:   "List, register, approve, revoke and reinstate machines",
		Long: `A machine is identified by its TPM endorsement key (EK fingerprint) and moves
through registered -> attested -> provisioned, or to decommissioned when
revoked. Pre-register the machines you expect, approve attested ones, revoke
those you no longer trust, and reinstate a revoked one to let it enroll again.`,
		Example: `  attestation machines list
  attestation machines show 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a`,
	}
	cmd.AddCommand(
		machinesListCommand(env),
		machinesShowCommand(env),
		machinesRegisterCommand(env),
		machinesApproveCommand(env),
		machinesRevokeCommand(env),
		machinesSetRoleCommand(env),
		machinesReinstateCommand(env),
	)
	return cmd
}

func machinesListCommand(env *Env) *cobra.Command {
	var (
		req      attestationv1.ListMachinesRequest
		pageSize int32
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List machines",
		Long: `List every machine known to the control plane in registration order,
optionally only those in one state or with one role. Extensions add flags
of their own (the tags extension: --tag KEY or --tag KEY=VALUE).`,
		Example: `  attestation machines list
  attestation machines list --state attested
  attestation machines list --role worker -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := env.Machines()
			var all []*attestationv1.Machine
			req.PageSize = pageSize
			for {
				resp, err := client.ListMachines(cmd.Context(), connect.NewRequest(&req))
				if err != nil {
					return fmt.Errorf("list machines: %w", err)
				}
				all = append(all, resp.Msg.Machines...)
				if resp.Msg.NextPageToken == "" {
					break
				}
				req.PageToken = resp.Msg.NextPageToken
			}
			all, err := env.filterMachines(cmd.Context(), all)
			if err != nil {
				return err
			}
			return env.printList(messages(all), len(all), "machines", func(w io.Writer) error { return machineTable(w, all) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.State, "state", "", "only machines in this state: registered, attested, provisioned or decommissioned")
	f.StringVar(&req.Role, "role", "", "only machines with this role")
	f.Int32Var(&pageSize, "page-size", 500, "machines fetched per request")
	_ = f.MarkHidden("page-size")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
		[]string{"registered", "attested", "provisioned", "decommissioned"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func machinesShowCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		Short:             "Show one machine",
		Example:           `  attestation machines show 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeMachineIDs(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Machines().GetMachine(cmd.Context(), connect.NewRequest(&attestationv1.GetMachineRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
}

func machinesRegisterCommand(env *Env) *cobra.Command {
	var req attestationv1.RegisterMachineRequest
	cmd := &cobra.Command{
		Use:   "register --ek-fingerprint FP",
		Short: "Pre-register a machine you expect to boot",
		Long: `Pre-register a machine by its EK fingerprint (the hex SHA-256 of the PKIX DER
of its TPM endorsement key's public key), optionally with its MAC addresses.

Given a role and a hostname (and optionally a schematic), the machine is
approved automatically as soon as it attests; otherwise it waits in attested
for 'attestation machines approve'.`,
		Example: `  attestation machines register --ek-fingerprint 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  attestation machines register --ek-fingerprint 9f86d0...0a08 --mac 52:54:00:12:34:56 --role worker --hostname node-1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := env.Machines().RegisterMachine(cmd.Context(), connect.NewRequest(&req))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.EkFingerprint, "ek-fingerprint", "", "EK fingerprint: 64 hex digits (required)")
	f.StringSliceVar(&req.Macs, "mac", nil, "a MAC address of the machine, like 52:54:00:12:34:56 (repeatable)")
	f.StringVar(&req.Role, "role", "", "role to approve the machine with once it attests")
	f.StringVar(&req.Hostname, "hostname", "", "hostname to approve the machine with once it attests")
	f.StringVar(&req.SchematicId, "schematic", "", "schematic ID (64 hex digits) to approve the machine with")
	_ = cmd.MarkFlagRequired("ek-fingerprint")
	return cmd
}

func machinesApproveCommand(env *Env) *cobra.Command {
	var req attestationv1.ApproveMachineRequest
	cmd := &cobra.Command{
		Use:   "approve ID [--role ROLE] [--hostname HOSTNAME]",
		Short: "Approve an attested machine",
		Long: `Approve a machine that has attested: it becomes provisioned with the given
role, hostname and schematic, and gets a one-time config. Only attested
machines can be approved; a registered machine must attest first.

--role and --hostname default to what the machine has (from its
pre-registration, set-role, or an approval before it was revoked and
reinstated); a machine that has none needs them.`,
		Example: `  attestation machines approve 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a --role worker --hostname node-1
  attestation machines approve 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a   # with the role and hostname it has`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeMachineIDs(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Id = args[0]
			resp, err := env.Machines().ApproveMachine(cmd.Context(), connect.NewRequest(&req))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "role of the machine, like worker (default: the role it has)")
	f.StringVar(&req.Hostname, "hostname", "", "hostname of the machine (default: the hostname it has)")
	f.StringVar(&req.SchematicId, "schematic", "", "schematic ID (64 hex digits) of the image to boot")
	return cmd
}

func machinesRevokeCommand(env *Env) *cobra.Command {
	var req attestationv1.RevokeMachineRequest
	cmd := &cobra.Command{
		Use:   "revoke ID --reason TEXT",
		Short: "Decommission a machine",
		Long: `Decommission a machine in any state. Its EK stays known as a tombstone: the
machine cannot enroll again until it is reinstated.`,
		Example:           `  attestation machines revoke 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a --reason "disk replaced, TPM cleared"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeMachineIDs(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Id = args[0]
			resp, err := env.Machines().RevokeMachine(cmd.Context(), connect.NewRequest(&req))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why the machine is decommissioned (required)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func machinesSetRoleCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:               "set-role ID ROLE",
		Short:             "Change the role of a machine",
		Long:              `Change the role of a machine that is not decommissioned.`,
		Example:           `  attestation machines set-role 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a control-plane`,
		Args:              exactArgs("ID", "ROLE"),
		ValidArgsFunction: completeMachineIDs(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Machines().SetMachineRole(cmd.Context(), connect.NewRequest(&attestationv1.SetMachineRoleRequest{Id: args[0], Role: args[1]}))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
}

func machinesReinstateCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "reinstate ID",
		Short: "Lift a decommissioned machine's tombstone",
		Long: `Reinstate a decommissioned machine: it returns to registered and must attest
(and be approved) again.`,
		Example:           `  attestation machines reinstate 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: completeMachineIDs(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := env.Machines().ReinstateMachine(cmd.Context(), connect.NewRequest(&attestationv1.ReinstateMachineRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			return env.printMachine(resp.Msg.Machine)
		},
	}
}

// filterMachines keeps the machines that every extension flag given to
// machines list (--tag ...) matches.
func (e *Env) filterMachines(ctx context.Context, ms []*attestationv1.Machine) ([]*attestationv1.Machine, error) {
	for _, f := range e.machineFilters {
		if len(f.values) == 0 {
			continue
		}
		ids, err := f.Select(ctx, f.values)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", f.Flag, err)
		}
		keep := make(map[string]bool, len(ids))
		for _, id := range ids {
			keep[strings.ToLower(id)] = true
		}
		ms = slices.DeleteFunc(ms, func(m *attestationv1.Machine) bool { return !keep[m.Id] })
	}
	return ms, nil
}

// printMachine prints one machine: key: value lines, or the machine's JSON
// or YAML.
func (e *Env) printMachine(m *attestationv1.Machine) error {
	return e.Print(m, func(w io.Writer) error { return machineDetails(w, m) })
}

func machineTable(w io.Writer, ms []*attestationv1.Machine) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tROLE\tHOSTNAME\tEK FINGERPRINT\tMACS\tREGISTERED")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			m.Id, m.State, orDash(m.Role), orDash(m.Hostname), shortFingerprint(m.EkFingerprint),
			orDash(strings.Join(m.Macs, ",")), formatTime(m.RegisteredAt))
	}
	return tw.Flush()
}

func machineDetails(w io.Writer, m *attestationv1.Machine) error {
	tw := newTable(w)
	rows := []struct{ k, v string }{
		{"ID", m.Id},
		{"State", m.State},
		{"EK fingerprint", m.EkFingerprint},
		{"Role", m.Role},
		{"Hostname", m.Hostname},
		{"Schematic", m.SchematicId},
		{"MACs", strings.Join(m.Macs, ", ")},
		{"IP", m.Ip},
		{"SMBIOS UUID", m.SmbiosUuid},
		{"Serial", m.Serial},
		{"Product", m.Product},
		{"Pre-registered", yesNo(m.PreRegistered)},
		{"TPM", tpm(m)},
		{"Registered", formatTime(m.RegisteredAt)},
		{"First seen", formatTime(m.FirstSeenAt)},
		{"Approved", formatTime(m.ApprovedAt)},
		{"Last heartbeat", formatTime(m.LastHeartbeatAt)},
		{"Decommissioned", formatTime(m.DecommissionedAt)},
		{"Decommission reason", m.DecommissionReason},
		{"Conflict with", conflict(m.ConflictWith)},
		{"Last attested", formatTime(m.AttestedAt)},
		{"Config fetched", formatTime(m.ConfiguredAt)},
		{"Updated", formatTime(m.UpdatedAt)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r.k, orDash(r.v))
	}
	return tw.Flush()
}

// conflict says which older machine reported the same SMBIOS UUID with
// another EK.
func conflict(id string) string {
	if id == "" {
		return ""
	}
	return id + " (same SMBIOS UUID, another EK: a new or cleared TPM, or a forged UUID)"
}

// shortFingerprint keeps the first 16 hex digits of an EK fingerprint,
// enough to tell machines apart in a table.
func shortFingerprint(fp string) string {
	if len(fp) <= 16 {
		return orDash(fp)
	}
	return fp[:16] + "…"
}

// tpm says whether the machine's agent reported a TPM; a machine that has
// not booted the agent yet (pre-registered by its EK) has not said.
func tpm(m *attestationv1.Machine) string {
	if m.FirstSeenAt == nil {
		return "unknown (not booted yet)"
	}
	return yesNo(m.TpmAvailable)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// completeMachineIDs completes a machine ID argument from the daemon's
// machine list, showing each machine's hostname and state.
func completeMachineIDs(env *Env) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		if err := env.resolve(cmd); err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		resp, err := env.Machines().ListMachines(ctx, connect.NewRequest(&attestationv1.ListMachinesRequest{PageSize: 1000}))
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []cobra.Completion
		for _, m := range resp.Msg.Machines {
			out = append(out, cobra.CompletionWithDesc(m.Id, orDash(m.Hostname)+" ("+m.State+")"))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// exactArgs requires one positional argument per name and says which are
// missing or extra.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(args) < len(names) {
			missing := names[len(args):]
			if len(missing) == 1 {
				return usageErrorf("%s: missing argument %s", cmd.CommandPath(), missing[0])
			}
			return usageErrorf("%s: missing arguments %s", cmd.CommandPath(), strings.Join(missing, " "))
		}
		return usageErrorf("%s: unexpected arguments %s (it takes %s)", cmd.CommandPath(), quoteAll(args[len(names):]), strings.Join(names, " "))
	}
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return usageErrorf("%s: unexpected arguments %s (it takes none)", cmd.CommandPath(), quoteAll(args))
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, " ")
}
