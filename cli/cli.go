// Package cli is the operator command line, attestation: it lists,
// registers, approves, revokes and reinstates machines, manages the
// per-role config templates, reads and watches the event log, and lists
// the daemon's extensions, all through the daemon's Connect API.
//
// Every command reads its connection settings and output format from one
// Env, which the root command fills from its flags and the environment
// before any command runs; command groups added later (extensions') get
// the same Env.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/internal/version"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// Environment variables read by the CLI; a flag beats its variable.
const (
	EnvURL    = "ATTESTATION_API_URL"
	EnvToken  = "ATTESTATION_TOKEN"
	EnvCAFile = "ATTESTATION_CA_FILE"
)

// DefaultURL is where the CLI looks for the daemon when neither --url nor
// ATTESTATION_API_URL says otherwise.
const DefaultURL = "http://localhost:9000"

// Output formats.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Env is what every command works with: where the daemon is, how to
// authenticate, how to print, and where to. The root command fills it
// from its flags and the environment before a command runs (in its
// PersistentPreRunE), so a command reads it in RunE, not when built. A
// command group added to the tree must not set a PersistentPreRun of its
// own: cobra would run it instead of the root's.
type Env struct {
	// URL is the daemon's API base URL, like http://localhost:9000.
	URL string
	// Token is --token or ATTESTATION_TOKEN; when empty, requests carry
	// the access token of the login cache (bearerToken).
	Token string
	// Output is table, json or yaml.
	Output string
	// CAFile is --ca-file or ATTESTATION_CA_FILE: a PEM bundle of the CAs
	// an https daemon's certificate must chain to, in place of the
	// system's roots; empty: the system's roots.
	CAFile string
	// HTTPClient carries the API calls; nil means a plain http.Client,
	// trusting CAFile when it is set.
	HTTPClient connect.HTTPClient
	// tlsTransport carries requests when CAFile is set.
	tlsTransport *http.Transport

	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (os.Getenv outside tests).
	Getenv func(string) string

	// machineFilters are the extensions' flags of machines list.
	machineFilters []*machineFilter

	// ctx is the running command's context, for extensions' Token,
	// which takes none.
	ctx context.Context
	// login is the login whose access token is being sent, once read.
	tokenMu sync.Mutex
	login   *login
}

// ClientOptions are the Connect options every API client of the CLI uses:
// the Connect protocol (plain HTTP/1.1 works) and the bearer token, found
// when the first call is made.
func (e *Env) ClientOptions() []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(bearerInterceptor{e})}
}

func (e *Env) httpClient() connect.HTTPClient {
	if e.HTTPClient != nil {
		return e.HTTPClient
	}
	if e.tlsTransport != nil {
		return &http.Client{Transport: e.tlsTransport}
	}
	return http.DefaultClient
}

// transport carries extensions' requests: trusting CAFile when it is set.
func (e *Env) transport() http.RoundTripper {
	if e.tlsTransport != nil {
		return e.tlsTransport
	}
	return http.DefaultTransport
}

// trust makes requests trust the CAs of the PEM file path alone (from
// the flag or variable named by from).
func (e *Env) trust(path, from string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usageErrorf("%s: %w", from, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return usageErrorf("%s %s: no PEM certificate in it (want the daemon's CA certificate, DATA_DIR/ca.crt on its machine)", from, path)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	tr.ForceAttemptHTTP2 = true
	e.tlsTransport = tr
	return nil
}

// Machines returns a MachineService client for the configured daemon.
func (e *Env) Machines() attestationv1connect.MachineServiceClient {
	return attestationv1connect.NewMachineServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

// Events returns an EventService client for the configured daemon.
func (e *Env) Events() attestationv1connect.EventServiceClient {
	return attestationv1connect.NewEventServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

// Configs returns a ConfigService client for the configured daemon.
func (e *Env) Configs() attestationv1connect.ConfigServiceClient {
	return attestationv1connect.NewConfigServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

// Schematics returns a SchematicService client for the configured daemon.
func (e *Env) Schematics() attestationv1connect.SchematicServiceClient {
	return attestationv1connect.NewSchematicServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

// Extensions returns an ExtensionService client for the configured daemon.
func (e *Env) Extensions() attestationv1connect.ExtensionServiceClient {
	return attestationv1connect.NewExtensionServiceClient(e.httpClient(), e.URL, e.ClientOptions()...)
}

// Main runs the command line with args against the process's standard
// streams and environment, stopping on Ctrl-C or SIGTERM, and returns the
// exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, os.Stdin, os.Stdout, os.Stderr, os.Getenv)
}

// Run runs the command line with args, the given streams and environment
// lookup until ctx is done, and returns the exit code: 0 on success, 1 on
// any error, which is printed as one line on stderr (plus a usage hint
// for usage errors).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return RunWith(ctx, Options{Args: args, Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv})
}

// Options are what RunWith runs the command line with.
type Options struct {
	Args           []string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Extensions, when non-nil, are exactly the extensions whose commands
	// are added (an empty slice: none); nil adds every registered one.
	Extensions []extensions.Extension
}

// RunWith is Run with the extensions chosen, for test kits and embedders.
func RunWith(ctx context.Context, o Options) (code int) {
	args, stdin, stdout, stderr := o.Args, o.Stdin, o.Stdout, o.Stderr
	env := &Env{Getenv: o.Getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr}
	exts := o.Extensions
	if exts == nil {
		exts = extensions.All()
	}
	root := newRootCommand(env)
	addExtensionCommands(root, env, exts, stderr)
	addMachineSelectors(root, env, exts, stderr)
	defer func() {
		if p := recover(); p != nil {
			x, ok := p.(exit)
			if !ok {
				panic(p)
			}
			fmt.Fprintln(stderr, "attestation: "+x.err.Error())
			code = 1
		}
	}()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	markRunErrors(root)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "attestation: "+describe(err, env, cmd))
	if isUsage(err) && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return 1
}

// NewRootCommand returns the attestation command tree, reading the
// environment with os.Getenv.
func NewRootCommand() *cobra.Command {
	env := &Env{Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	root := newRootCommand(env)
	addExtensionCommands(root, env, extensions.All(), os.Stderr)
	addMachineSelectors(root, env, extensions.All(), os.Stderr)
	return root
}

func newRootCommand(env *Env) *cobra.Command {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	root := &cobra.Command{
		Use:   "attestation",
		Short: "Operate the attestation control plane",
		Long: `attestation is the operator's command line for the attestation control plane
(attestationd): list machines and their lifecycle state, pre-register the
machines you expect, approve attested ones, revoke and reinstate them, change
roles, and read or follow the event log.

It talks to the daemon's API at --url (or ATTESTATION_API_URL, default
` + DefaultURL + `) with the bearer token from --token (or ATTESTATION_TOKEN),
else with the login of 'attestation auth login' (OpenID Connect: Keycloak).
A daemon started without a configured token generates one and keeps it in
DATA_DIR/admin-token. An https daemon's certificate must chain to the
system's roots or, with --ca-file (or ATTESTATION_CA_FILE), to the CAs in that
file instead: a daemon's own CA is DATA_DIR/ca.crt on its machine.`,
		Example: `  export ATTESTATION_API_URL=http://attestation.example:9000
  attestation auth login --issuer https://keycloak.example/realms/ops
  attestation machines list --state attested
  attestation machines approve 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a --role worker --hostname node-1
  attestation events watch`,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return env.resolve(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	// cobra prints Version for --version, before anything resolves the
	// environment: no daemon is needed.
	root.Version = version.Get().Format(root.Name(), extensions.Versions())
	root.SetVersionTemplate("{{.Version}}")
	root.Flags().Bool("version", false, "print the version, its build, and the compiled-in extensions")
	pf := root.PersistentFlags()
	pf.StringVar(&env.URL, "url", DefaultURL, "daemon API URL (env "+EnvURL+")")
	pf.StringVar(&env.Token, "token", "", "API bearer token (env "+EnvToken+"; default: the login of auth login)")
	pf.StringVar(&env.CAFile, "ca-file", "", "PEM file of the CA certificates an https daemon's certificate must chain to, used instead of the system's roots, e.g. a copy of the daemon's DATA_DIR/ca.crt (env "+EnvCAFile+"; default: the system's roots)")
	pf.StringVarP(&env.Output, "output", "o", OutputTable, "output format: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{OutputTable, OutputJSON, OutputYAML}, cobra.ShellCompDirectiveNoFileComp))

	root.AddGroup(&cobra.Group{ID: coreGroup, Title: "Commands:"})
	for _, c := range []*cobra.Command{machinesCommand(env), configsCommand(env), schematicsCommand(env), eventsCommand(env), auditCommand(env), extensionsCommand(env), imagesCommand(env), authCommand(env)} {
		c.GroupID = coreGroup
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID(coreGroup)
	root.SetCompletionCommandGroupID(coreGroup)
	return root
}

const coreGroup = "core"

// groupRun runs a command that only groups others: it shows the group's
// help, or reports an unknown subcommand (cobra does that only for the
// root).
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return &usageError{errors.New(msg)}
}

// resolve fills env from the environment where no flag was given and
// checks the result.
func (e *Env) resolve(cmd *cobra.Command) error {
	flags := cmd.Flags()
	if !flags.Changed("url") {
		if v := e.Getenv(EnvURL); v != "" {
			e.URL = v
		}
	}
	if !flags.Changed("token") {
		e.Token = e.Getenv(EnvToken)
	}
	e.Token = strings.TrimSpace(e.Token)
	caFrom := "--ca-file"
	if !flags.Changed("ca-file") {
		e.CAFile, caFrom = e.Getenv(EnvCAFile), EnvCAFile
	}
	if e.CAFile != "" {
		if err := e.trust(e.CAFile, caFrom); err != nil {
			return err
		}
	}
	e.Stdin, e.Stdout, e.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	e.ctx = cmd.Context()

	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("--url %q is not an http:// or https:// URL (like %s)", e.URL, DefaultURL)
	}
	e.URL = strings.TrimRight(e.URL, "/")
	switch e.Output {
	case OutputTable, OutputJSON, OutputYAML:
	default:
		return usageErrorf("--output %q: want table, json or yaml", e.Output)
	}
	return nil
}

// bearerInterceptor sends the token of bearerToken on every call, unary
// or streaming; a call without one fails before it is sent.
type bearerInterceptor struct{ env *Env }

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		tok, err := b.env.bearerToken(ctx)
		if err != nil {
			return nil, err
		}
		req.Header().Set("Authorization", "Bearer "+tok)
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		tok, err := b.env.bearerToken(ctx)
		if err != nil {
			return failedStream{spec: spec, err: err}
		}
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+tok)
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// failedStream is a stream that could not be opened: sending on it or
// receiving from it returns why.
type failedStream struct {
	spec connect.Spec
	err  error
}

func (f failedStream) Spec() connect.Spec           { return f.spec }
func (f failedStream) Peer() connect.Peer           { return connect.Peer{} }
func (f failedStream) Send(any) error               { return f.err }
func (f failedStream) RequestHeader() http.Header   { return http.Header{} }
func (f failedStream) CloseRequest() error          { return nil }
func (f failedStream) Receive(any) error            { return f.err }
func (f failedStream) ResponseHeader() http.Header  { return http.Header{} }
func (f failedStream) ResponseTrailer() http.Header { return http.Header{} }
func (f failedStream) CloseResponse() error         { return nil }
