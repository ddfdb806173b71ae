package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// auditActions are the core's audit actions, for completion: audit.Actions,
// which the CLI cannot import (a test keeps the two equal).
var auditActions = []string{
	"machine.register", "machine.approve", "machine.revoke", "machine.set_role",
	"machine.reinstate", "config.set", "config.delete", "schematic.create", "image.build",
}

// Audit returns an AuditService client for the configured daemon.
func (e *Env) Audit() attestationv1connect.AuditServiceClient {
	return attestationv1connect.NewAuditServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

func auditCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
		Short: "Read the operator audit trail",
		Long: `Every operator action that changes something (approve, revoke, set-role,
reinstate, register, configs set and delete, schematics create, images
build, and extensions' changes) is recorded with who did it, when, to which
machine, the request's ID (its X-Request-Id), and how it ended: ok, or the
error. Refused actions are recorded too; reads are not.`,
		Example: `  attestation audit list --since 24h
  attestation audit list --machine 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a -o json`,
	}
	cmd.AddCommand(auditListCommand(env))
	return cmd
}

func auditListCommand(env *Env) *cobra.Command {
	var (
		req   attestationv1.ListAuditRecordsRequest
		since string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List audit records, oldest first",
		Long: `List audit records in commit order, optionally only one machine's, one
actor's (their subject or name), one action's, or those of the last
--since (a duration like 90m, 24h or 7d, or a time like 2026-01-02T15:04:05Z),
or at most --limit of them.

Actions: machine.register, machine.approve, machine.revoke, machine.set_role,
machine.reinstate, config.set, config.delete, schematic.create, image.build,
and an extension's route as "<extension> <METHOD> <pattern>".`,
		Example: `  attestation audit list
  attestation audit list --since 24h --action machine.approve
  attestation audit list --actor alice --limit 20 -o yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErrorf("--limit %d: want a positive number, or 0 for all records", limit)
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageErrorf("--since %q: %v", since, err)
				}
				req.Since = timestamppb.New(t)
			}
			client := env.Audit()
			var all []*attestationv1.AuditRecord
			for {
				req.PageSize = 1000
				if limit > 0 && limit-len(all) < 1000 {
					req.PageSize = int32(limit - len(all))
				}
				resp, err := client.ListAuditRecords(cmd.Context(), connect.NewRequest(&req))
				if err != nil {
					return fmt.Errorf("list audit records: %w", err)
				}
				all = append(all, resp.Msg.Records...)
				if resp.Msg.NextPageToken == "" || (limit > 0 && len(all) >= limit) {
					break
				}
				req.PageToken = resp.Msg.NextPageToken
			}
			return env.printList(messages(all), len(all), "audit records", func(w io.Writer) error { return auditTable(w, all) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Machine, "machine", "", "only records about the machine with this ID")
	f.StringVar(&req.Actor, "actor", "", "only records of this actor (subject or name)")
	f.StringVar(&since, "since", "", "only records of the last DURATION (like 24h or 7d), or since a time (RFC 3339)")
	f.StringVar(&req.Action, "action", "", "only records of this action, like machine.approve")
	f.IntVar(&limit, "limit", 0, "at most this many records (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("action", cobra.FixedCompletions(auditActions, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("machine", completeMachineIDs(env))
	return cmd
}

// parseSince reads --since: a duration before now (Go's, or whole days
// like 7d), or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		n, aerr := strconv.Atoi(days)
		if aerr == nil {
			d, err = time.Duration(n)*24*time.Hour, nil
		}
	}
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("want a duration like 90m, 24h or 7d, or a time like 2026-01-02T15:04:05Z")
	}
	return now.Add(-d), nil
}

func auditTable(w io.Writer, recs []*attestationv1.AuditRecord) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tMACHINE\tREQUEST\tRESULT\tDETAIL")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", formatTime(r.Time), orDash(r.GetActor().GetName()), r.Action,
			orDash(r.MachineId), orDash(r.RequestId), cell(r.Result), orDash(cell(r.Detail)))
	}
	return tw.Flush()
}

// cell keeps s in its table cell: line breaks and tabs become spaces.
func cell(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
