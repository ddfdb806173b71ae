package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/attestation/attestation/extensions"
)

// Commands adds "attestation webhook ...".
func (*Extension) Commands(cli extensions.CLI) ([]*cobra.Command, error) {
	cmd := &cobra.Command{
		Use:     "webhook",
		Aliases: []string{"webhooks"},
		Short:   "Show webhook targets and deliveries, send test events",
		Long: `The webhook extension POSTs lifecycle events to the targets set in the
daemon's config file (extensions: webhook: targets:), signed with each
target's secret, and retries failed deliveries with backoff. List the
targets, read the delivery log, or send a test event to a target.`,
		Example: `  attestation webhook list
  attestation webhook deliveries --target ops --status failed
  attestation webhook test ops`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("unknown command %q for %q (want list, deliveries or test)", args[0], cmd.CommandPath())
		},
	}
	cmd.AddCommand(listCommand(cli), deliveriesCommand(cli), testCommand(cli))
	return []*cobra.Command{cmd}, nil
}

func listCommand(cli extensions.CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the webhook targets with their delivery counts",
		Long: `List the webhook targets the daemon sends to: name, URL (any password
masked; secrets are never shown), the events each takes ("all" when it
does not filter), its request timeout, and how many deliveries are
pending, delivered and failed.`,
		Example: `  attestation webhook list
  attestation webhook list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out TargetList
			if err := call(cmd.Context(), cli, http.MethodGet, "/targets", &out); err != nil {
				return fmt.Errorf("list webhook targets: %w", err)
			}
			return extensions.PrintList(cli, out.Targets, len(out.Targets), "webhook targets", func(w io.Writer) error { return targetTable(w, out.Targets) })
		},
	}
}

func deliveriesCommand(cli extensions.CLI) *cobra.Command {
	var (
		target, status string
		limit          int
	)
	cmd := &cobra.Command{
		Use:   "deliveries",
		Short: "Show the webhook delivery log, newest first",
		Long: `Show the deliveries of events to webhook targets, newest first: which event
went (or is going) to which target, its state (pending, delivered or
failed), how many attempts it took, and the last HTTP status or error.`,
		Example: `  attestation webhook deliveries
  attestation webhook deliveries --target ops --status failed --limit 20
  attestation webhook deliveries -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if target != "" {
				q.Set("target", target)
			}
			if status != "" {
				q.Set("status", status)
			}
			q.Set("limit", fmt.Sprint(limit))
			var out DeliveryList
			if err := call(cmd.Context(), cli, http.MethodGet, "/deliveries?"+q.Encode(), &out); err != nil {
				return fmt.Errorf("list webhook deliveries: %w", err)
			}
			return extensions.PrintList(cli, out.Deliveries, len(out.Deliveries), "deliveries", func(w io.Writer) error { return deliveryTable(w, out.Deliveries) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "only deliveries to this target")
	f.StringVar(&status, "status", "", "only deliveries in this state: pending, delivered or failed")
	f.IntVar(&limit, "limit", defaultListLimit, fmt.Sprintf("at most this many deliveries (1 to %d)", maxListLimit))
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions(
		[]string{statusPending, statusDelivered, statusFailed}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func testCommand(cli extensions.CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "test NAME",
		Short: "Send a signed test event to a webhook target now",
		Long: `Send a synthetic webhook.test event to the target, signed like every
delivery, and show what came back: the HTTP status, the time it took, or
why it failed. The test is sent once, not queued or retried. The command
fails when the target did not answer with 2xx.`,
		Example: `  attestation webhook test ops`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res TestResult
			if err := call(cmd.Context(), cli, http.MethodPost, "/targets/"+url.PathEscape(args[0])+"/test", &res); err != nil {
				return fmt.Errorf("test webhook target %s: %w", args[0], err)
			}
			if err := cli.Print(res, func(w io.Writer) error { return testTable(w, res) }); err != nil {
				return err
			}
			if !res.Delivered {
				return fmt.Errorf("test webhook target %s: not delivered: %s", args[0], res.Error)
			}
			return nil
		},
	}
}

// call sends a request to the extension's API and decodes the JSON answer
// into out, turning the API's JSON errors into their message.
func call(ctx context.Context, cli extensions.CLI, method, path string, out any) error {
	base := cli.BaseURL()
	req, err := http.NewRequestWithContext(ctx, method, base+"/api/v1/"+name+path, nil)
	if err != nil {
		return err
	}
	resp, err := cli.HTTPClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cause := err.Error()
		var ue *url.Error
		if errors.As(err, &ue) && ue.Err != nil {
			cause = ue.Err.Error()
		}
		return fmt.Errorf("cannot reach the daemon at %s: %s (is attestationd running? set --url or ATTESTATION_API_URL)", base, cause)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode the daemon's answer: %w", err)
		}
		return nil
	}
	var apiErr struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	// A 404 not in the API's error shape (an older daemon), or whose code
	// is unimplemented: the daemon has no such route.
	if json.Unmarshal(body, &apiErr) != nil || apiErr.Message == "" ||
		(resp.StatusCode == http.StatusNotFound && apiErr.Code == int(connect.CodeUnimplemented)) {
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("the daemon at %s does not serve the webhook API: is it built with the webhook extension?", base)
		}
		return fmt.Errorf("the daemon at %s answered HTTP %s", base, resp.Status)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("the daemon at %s did not accept the token (%s): pass --token or set ATTESTATION_TOKEN", base, apiErr.Message)
	}
	return errors.New(apiErr.Message)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// timeLayout is how tables show times, as the core commands do.
const timeLayout = "2006-01-02 15:04:05"

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func targetTable(w io.Writer, ts []Target) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tURL\tEVENTS\tTIMEOUT\tPENDING\tDELIVERED\tFAILED")
	for _, t := range ts {
		evs := "all"
		if len(t.Events) > 0 {
			evs = strings.Join(t.Events, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", t.Name, t.URL, evs, t.Timeout, t.Pending, t.Delivered, t.Failed)
	}
	return tw.Flush()
}

func deliveryTable(w io.Writer, ds []Delivery) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tCREATED\tTARGET\tEVENT\tMACHINE\tSTATUS\tATTEMPTS\tHTTP\tERROR")
	for _, d := range ds {
		code := "-"
		if d.LastStatusCode != 0 {
			code = fmt.Sprint(d.LastStatusCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.CreatedAt.In(time.Local).Format(timeLayout),
			d.Target, d.EventType, orDash(d.MachineID), d.Status, d.Attempts, code, orDash(d.LastError))
	}
	return tw.Flush()
}

func testTable(w io.Writer, r TestResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TARGET\tURL\tRESULT\tHTTP\tLATENCY\tERROR")
	result, code := "failed", "-"
	if r.Delivered {
		result = "delivered"
	}
	if r.StatusCode != 0 {
		code = fmt.Sprint(r.StatusCode)
	}
	latency := time.Duration(r.LatencyMS * float64(time.Millisecond)).Round(100 * time.Microsecond)
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Target, r.URL, result, code, latency, orDash(r.Error))
	return tw.Flush()
}
