package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"github.com/spf13/cobra"
)

// usageError is a mistake in the command line itself; it is reported
// with a hint to read the command's help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// runError is an error returned by a command's RunE: the command line was
// fine, what it asked for failed. Anything else cobra returns (unknown
// commands, missing required flags, wrong arguments) is a usage error.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// markRunErrors wraps the RunE of cmd and its descendants so that their
// errors are told apart from cobra's usage errors.
func markRunErrors(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if err := run(c, args); err != nil {
				return &runError{err}
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		markRunErrors(c)
	}
}

// isUsage reports whether err is about how the command line was written.
func isUsage(err error) bool {
	var ue *usageError
	if errors.As(err, &ue) {
		return true
	}
	var re *runError
	return !errors.As(err, &re)
}

// describe turns err into the one line printed after "attestation: ".
func describe(err error, env *Env, cmd *cobra.Command) string {
	return oneLine(describeMultiline(err, env, cmd))
}

func describeMultiline(err error, env *Env, cmd *cobra.Command) string {
	var ae *authError
	if errors.As(err, &ae) {
		return ae.Error()
	}
	if msg := tlsProblem(err, env); msg != "" {
		return msg
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err.Error()
	}
	switch ce.Code() {
	case connect.CodeUnavailable:
		if connect.IsWireError(ce) {
			// The daemon answered: something it depends on (an OIDC
			// issuer, say) is down.
			return fmt.Sprintf("the daemon at %s is unavailable: %s", env.URL, ce.Message())
		}
		return fmt.Sprintf("cannot reach the daemon at %s: %s (is attestationd running? set --url or %s)",
			env.URL, transportCause(ce), EnvURL)
	case connect.CodeUnauthenticated:
		how := fmt.Sprintf("pass --token or set %s; a daemon started without one keeps its generated admin token in DATA_DIR/admin-token", EnvToken)
		if env.Token == "" && env.loggedIn() {
			return fmt.Sprintf("the daemon at %s did not accept your login token (%s): is it configured for this issuer and audience (--oidc-issuer, --oidc-audience)? Run `attestation auth login` again, or %s",
				env.URL, ce.Message(), how)
		}
		if env.Token == "" {
			return fmt.Sprintf("the daemon at %s requires a token: %s", env.URL, how)
		}
		return fmt.Sprintf("the daemon at %s did not accept the token (%s): %s", env.URL, ce.Message(), how)
	case connect.CodePermissionDenied:
		return "permission denied: " + ce.Message()
	case connect.CodeInvalidArgument:
		if v := violations(ce, cmd); v != "" {
			return v
		}
		msg := ce.Message()
		for _, prefix := range []string{"validation errors:", "validation error:"} {
			msg = strings.TrimPrefix(msg, prefix)
		}
		return strings.TrimSpace(msg)
	case connect.CodeUnimplemented:
		return fmt.Sprintf("%s does not serve this API (%s): is --url the attestation daemon?", env.URL, ce.Message())
	case connect.CodeDeadlineExceeded:
		return fmt.Sprintf("the daemon at %s did not answer in time", env.URL)
	case connect.CodeCanceled:
		return "canceled"
	case connect.CodeInternal, connect.CodeUnknown:
		if errors.Is(err, syscall.ECONNREFUSED) || isNetError(err) {
			return fmt.Sprintf("cannot reach the daemon at %s: %s (is attestationd running? set --url or %s)",
				env.URL, transportCause(ce), EnvURL)
		}
		return fmt.Sprintf("the daemon at %s failed: %s", env.URL, ce.Message())
	}
	if msg := ce.Message(); msg != "" {
		return msg
	}
	return ce.Code().String()
}

// tlsProblem says why the daemon's TLS was not accepted, and what to do;
// "" when err is not about TLS.
func tlsProblem(err error, env *Env) string {
	var (
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown) && env.CAFile != "":
		return fmt.Sprintf("the daemon at %s presented a certificate that no CA in %s signed: is --ca-file the daemon's CA certificate (DATA_DIR/ca.crt on its machine, or its ca_cert)?",
			env.URL, env.CAFile)
	case errors.As(err, &unknown):
		return fmt.Sprintf("the daemon at %s presented a certificate of a CA this machine does not trust: pass --ca-file with the daemon's CA certificate (DATA_DIR/ca.crt on its machine, or its ca_cert), or set %s",
			env.URL, EnvCAFile)
	case errors.As(err, &host):
		return fmt.Sprintf("the daemon's certificate does not name the host of %s (%v): use a --url with a name it has", env.URL, host.Error())
	case errors.As(err, &invalid):
		return fmt.Sprintf("the daemon at %s presented a certificate that is not valid: %v", env.URL, invalid.Error())
	case errors.As(err, &record), errors.Is(err, http.ErrSchemeMismatch):
		return fmt.Sprintf("the daemon at %s does not speak TLS: use an http:// --url, or start attestationd with --tls-cert or --tls-self-signed", env.URL)
	}
	return ""
}

// transportCause names why a request did not reach the daemon, without
// the request URL that Go's HTTP client repeats.
func transportCause(err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "connection refused"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// violations renders the field violations a validating server attaches to
// an InvalidArgument error, naming fields as the command's flags where it
// has one by that name.
func violations(ce *connect.Error, cmd *cobra.Command) string {
	var out []string
	for _, d := range ce.Details() {
		msg, err := d.Value()
		if err != nil {
			continue
		}
		vs, ok := msg.(*validate.Violations)
		if !ok {
			continue
		}
		for _, v := range vs.GetViolations() {
			var names []string
			for _, el := range v.GetField().GetElements() {
				names = append(names, el.GetFieldName())
			}
			field := flagName(strings.Join(names, "."), cmd)
			if field == "" {
				out = append(out, v.GetMessage())
				continue
			}
			out = append(out, field+": "+v.GetMessage())
		}
	}
	return strings.Join(out, "; ")
}

// flagAliases maps request fields to the flags that set them where the
// names differ.
var flagAliases = map[string]string{
	"macs":         "mac",
	"schematic_id": "schematic",
	"after_seq":    "since",
	"page_size":    "limit",
}

// flagName returns "--flag" for a request field that cmd sets with a flag,
// "ID" for the machine ID argument, or the field name.
func flagName(field string, cmd *cobra.Command) string {
	if field == "id" {
		return "ID"
	}
	if cmd == nil {
		return field
	}
	name, ok := flagAliases[field]
	if !ok {
		name = strings.ReplaceAll(field, "_", "-")
	}
	if cmd.Flags().Lookup(name) != nil {
		return "--" + name
	}
	return field
}

// oneLine joins the lines of a multi-line message.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimSpace(l), "- ")
	}
	return strings.Join(lines, "; ")
}
