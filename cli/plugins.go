package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/extensions"
)

// exit carries an error out of an extension's command through a panic,
// so that Token can end the command as its contract says.
type exit struct{ err error }

// pluginCLI is what extensions' commands see of the CLI.
type pluginCLI struct{ env *Env }

var _ extensions.CLI = pluginCLI{}

func (p pluginCLI) BaseURL() string   { return p.env.URL }
func (p pluginCLI) Output() string    { return p.env.Output }
func (p pluginCLI) Stdout() io.Writer { return p.env.Stdout }
func (p pluginCLI) Stderr() io.Writer { return p.env.Stderr }

func (p pluginCLI) Print(data any, table func(w io.Writer) error) error {
	return p.env.Print(data, table)
}

// Token returns the token of bearerToken; with none, the command ends
// with its error, saying how to log in.
func (p pluginCLI) Token() string {
	ctx := p.env.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	tok, err := p.env.bearerToken(ctx)
	if err != nil {
		panic(exit{err})
	}
	return tok
}

// HTTPClient sends the bearer token with every request. Without a token
// the command ends here; a login's token is refreshed as it expires.
func (p pluginCLI) HTTPClient() *http.Client {
	p.Token()
	return &http.Client{Transport: bearerTransport{env: p.env}}
}

type bearerTransport struct{ env *Env }

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := t.env.bearerToken(r.Context())
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.env.transport().RoundTrip(r)
}

// addExtensionCommands adds the command groups of every Commander. One
// that fails, panics, or collides with an existing command is reported
// on stderr and left out; the rest of the CLI works.
func addExtensionCommands(root *cobra.Command, env *Env, exts []extensions.Extension, stderr io.Writer) {
	for _, e := range exts {
		c, ok := e.(extensions.Commander)
		if !ok {
			continue
		}
		name := e.Info().Name
		cmds, err := guarded(func() ([]*cobra.Command, error) { return c.Commands(pluginCLI{env: env}) })
		if err != nil {
			fmt.Fprintf(stderr, "attestation: extension %s: cannot add its commands: %v\n", name, err)
			continue
		}
		for _, cmd := range cmds {
			if cmd == nil {
				continue
			}
			if existing, _, err := root.Find([]string{cmd.Name()}); err == nil && existing != root {
				fmt.Fprintf(stderr, "attestation: extension %s: command %q is already taken; left out\n", name, cmd.Name())
				continue
			}
			if cmd.PersistentPreRun != nil || cmd.PersistentPreRunE != nil {
				fmt.Fprintf(stderr, "attestation: extension %s: command %q sets a PersistentPreRun, which would skip the CLI's own; left out\n", name, cmd.Name())
				continue
			}
			if cmd.GroupID == "" {
				if !root.ContainsGroup(extensionsGroup) {
					root.AddGroup(&cobra.Group{ID: extensionsGroup, Title: "Extension commands:"})
				}
				cmd.GroupID = extensionsGroup
			}
			groupsRunHelp(cmd)
			markRunErrors(cmd)
			root.AddCommand(cmd)
		}
	}
}

const extensionsGroup = "extensions"

// guarded calls an extension's fn, turning a panic into an error so that
// one broken extension leaves the rest of the CLI working.
func guarded[T any](fn func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panicked: %v\n%s", p, firstLines(string(debug.Stack()), 8))
		}
	}()
	return fn()
}

// machineFilter is an extension's flag of machines list and the values
// given to it.
type machineFilter struct {
	extensions.Selector
	values []string
}

// addMachineSelectors adds the flags of every MachineSelector to machines
// list; one whose flag is taken is reported on stderr and left out.
func addMachineSelectors(root *cobra.Command, env *Env, exts []extensions.Extension, stderr io.Writer) {
	list, _, err := root.Find([]string{"machines", "list"})
	if err != nil {
		return
	}
	for _, e := range exts {
		ms, ok := e.(extensions.MachineSelector)
		if !ok {
			continue
		}
		sels, err := guarded(func() ([]extensions.Selector, error) { return ms.MachineSelectors(pluginCLI{env: env}), nil })
		if err != nil {
			fmt.Fprintf(stderr, "attestation: extension %s: cannot add its machines list flags: %v\n", e.Info().Name, err)
			continue
		}
		for _, sel := range sels {
			if sel.Flag == "" || sel.Select == nil || list.Flags().Lookup(sel.Flag) != nil {
				fmt.Fprintf(stderr, "attestation: extension %s: machines list flag %q is empty or taken; left out\n", e.Info().Name, sel.Flag)
				continue
			}
			f := &machineFilter{Selector: sel}
			env.machineFilters = append(env.machineFilters, f)
			list.Flags().StringArrayVar(&f.values, sel.Flag, nil, sel.Usage)
		}
	}
}

// groupsRunHelp makes every command of the tree that only groups others
// behave like the core's groups: help without arguments, a usage error
// naming an unknown subcommand.
func groupsRunHelp(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = groupRun
	}
	for _, c := range cmd.Commands() {
		groupsRunHelp(c)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
