package tags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/attestation/attestation/extensions"
)

// Commands implements extensions.Commander: the "attestation tag" group.
// The commands only hold c; its URL, token and output format are settled
// when a command runs, so they are read in RunE.
func (*Extension) Commands(c extensions.CLI) ([]*cobra.Command, error) {
	cmd := &cobra.Command{
		Use:     "tag",
		Aliases: []string{"tags"},
		Short:   "List, add and remove the tags of machines",
		Long: `A tag is a key, and optionally a value, on a machine: rack=r12, owner=storage,
gpu. A key is up to 63 lowercase letters, digits, '.', '_', '/' and '-'; a
machine has each key once, and adding a key it has changes its value.`,
		Example: `  attestation tag add 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a rack=r12 gpu
  attestation tag list 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a
  attestation tag remove 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a rack`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(listCommand(c), addCommand(c), removeCommand(c))
	return []*cobra.Command{cmd}, nil
}

var _ extensions.MachineSelector = (*Extension)(nil)

// MachineSelectors implements extensions.MachineSelector: --tag on
// `attestation machines list`.
func (*Extension) MachineSelectors(c extensions.CLI) []extensions.Selector {
	return []extensions.Selector{{
		Flag:  "tag",
		Usage: "only machines with this tag: KEY (any value) or KEY=VALUE (repeatable: all of them)",
		Select: func(ctx context.Context, values []string) ([]string, error) {
			q := url.Values{"tag": values}
			var resp struct {
				MachineIDs []string `json:"machine_ids"`
			}
			if err := call(ctx, c, http.MethodGet, "/machines?"+q.Encode(), nil, &resp); err != nil {
				return nil, err
			}
			return resp.MachineIDs, nil
		},
	}}
}

func listCommand(c extensions.CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "list MACHINE_ID",
		Short: "List a machine's tags",
		Example: `  attestation tag list 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a
  attestation tag list 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a -o json`,
		Args: positional("MACHINE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			tags, err := listTags(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			return extensions.PrintList(c, tags, len(tags), "tags", func(w io.Writer) error { return tagTable(w, tags) })
		},
	}
}

func addCommand(c extensions.CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "add MACHINE_ID KEY[=VALUE]...",
		Short: "Tag a machine, or change the values of its tags",
		Long: `Add one or more tags to a machine. A key the machine has already keeps its
tag (and ID) and gets the new value. Every tag is checked before any is
sent, so a mistake in one adds none.`,
		Example: `  attestation tag add 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a rack=r12
  attestation tag add 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a owner=storage gpu "note=disk 3 replaced"`,
		Args: positional("MACHINE_ID", "KEY[=VALUE]..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			type request struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			}
			var reqs []request
			for _, arg := range args[1:] {
				key, value, _ := strings.Cut(arg, "=")
				if err := check(key, value); err != nil {
					return err
				}
				if slices.ContainsFunc(reqs, func(r request) bool { return r.Key == key }) {
					return fmt.Errorf("key %s is given twice", key)
				}
				reqs = append(reqs, request{key, value})
			}
			var added []Tag
			for _, req := range reqs {
				var t Tag
				if err := call(cmd.Context(), c, http.MethodPost, tagsPath(args[0]), req, &t); err != nil {
					return fmt.Errorf("add %s: %w", req.Key, err)
				}
				added = append(added, t)
			}
			return c.Print(added, func(w io.Writer) error { return tagTable(w, added) })
		},
	}
}

func removeCommand(c extensions.CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "remove MACHINE_ID TAG_ID|KEY",
		Aliases: []string{"rm"},
		Short:   "Remove a tag from a machine, by ID or by key",
		Example: `  attestation tag remove 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a rack
  attestation tag remove 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a 9c1d7f2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f`,
		Args: positional("MACHINE_ID", "TAG_ID|KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			machineID, which := args[0], args[1]
			// A key can look like an ID: an ID match wins, then a key match.
			tags, err := listTags(cmd.Context(), c, machineID)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(tags, func(t Tag) bool { return t.ID == strings.ToLower(which) })
			if i < 0 {
				i = slices.IndexFunc(tags, func(t Tag) bool { return t.Key == which })
			}
			if i < 0 {
				return fmt.Errorf("machine %s has no tag with ID or key %q", machineID, which)
			}
			t := tags[i]
			if err := call(cmd.Context(), c, http.MethodDelete, tagsPath(machineID)+"/"+t.ID, nil, nil); err != nil {
				return fmt.Errorf("remove %s: %w", t.Key, err)
			}
			return c.Print(t, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Removed tag %s (%s) from machine %s\n", t.Key, t.ID, t.MachineID)
				return err
			})
		},
	}
}

// positional requires the arguments named, the last one repeatable when it
// ends in "...", and says which are missing or extra: cobra's own checks
// count arguments but do not name them.
func positional(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return fmt.Errorf("%s: missing %s", cmd.CommandPath(), strings.Join(names[len(args):], " "))
		case len(args) > len(names) && !strings.HasSuffix(names[len(names)-1], "..."):
			return fmt.Errorf("%s: unexpected argument %q (it takes %s)", cmd.CommandPath(), args[len(names)], strings.Join(names, " "))
		}
		return nil
	}
}

func tagsPath(machineID string) string {
	return "/machines/" + url.PathEscape(machineID) + "/tags"
}

func listTags(ctx context.Context, c extensions.CLI, machineID string) ([]Tag, error) {
	var resp struct {
		Tags []Tag `json:"tags"`
	}
	if err := call(ctx, c, http.MethodGet, tagsPath(machineID), nil, &resp); err != nil {
		return nil, err
	}
	return resp.Tags, nil
}

// call sends in (when not nil) as JSON to path under the tags API and
// decodes the answer into out (when not nil). An error answer becomes an
// error with its message, for the CLI to print on one line.
func call(ctx context.Context, c extensions.CLI, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL()+"/api/v1/tags"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the request URL, which the message would repeat
		}
		return fmt.Errorf("cannot reach the daemon at %s: %w", c.BaseURL(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return answerError(c, req, resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the daemon's answer: %w", err)
	}
	return nil
}

// answerError turns an error answer into its message.
func answerError(c extensions.CLI, req *http.Request, resp *http.Response) error {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Message == "" ||
		(resp.StatusCode == http.StatusNotFound && e.Code == int(connect.CodeUnimplemented)) {
		// Not the API's error shape (an older daemon, or not the daemon),
		// or the daemon has no such route.
		return fmt.Errorf("the daemon at %s answered %s to %s %s: is it built with the tags extension?",
			c.BaseURL(), resp.Status, req.Method, req.URL.Path)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("the daemon at %s did not accept the token (%s): pass --token or set ATTESTATION_TOKEN", c.BaseURL(), e.Message)
	}
	return errors.New(e.Message)
}

func tagTable(w io.Writer, tags []Tag) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tVALUE\tCREATED BY\tCREATED")
	for _, t := range tags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Key, orDash(t.Value), orDash(t.CreatedBy),
			t.CreatedAt.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// orDash keeps an empty cell visible in a table.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
