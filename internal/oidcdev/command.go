package oidcdev

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// DefaultListen is where attestation-oidc-dev listens unless told.
const DefaultListen = "127.0.0.1:9400"

// DefaultUsers are attestation-oidc-dev's users unless --user is given:
// one of each role.
var DefaultUsers = []string{"alice:operator", "bob:viewer", "root:admin"}

// ParseUser reads a user as --user gives one: USERNAME, then optionally
// a colon and comma-separated realm roles (alice:operator,viewer).
func ParseUser(s string) (User, error) {
	name, roles, _ := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if name == "" {
		return User{}, fmt.Errorf("user %q: want USERNAME[:ROLE,...], like alice:operator", s)
	}
	u := User{Username: name}
	for _, r := range strings.Split(roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			u.Roles = append(u.Roles, r)
		}
	}
	return u, nil
}

// Command returns the attestation-oidc-dev command line.
func Command() *cobra.Command {
	var (
		o     Options
		users []string
	)
	cmd := &cobra.Command{
		Use:   "attestation-oidc-dev",
		Short: "A development OpenID Connect provider for attestation",
		Long: `attestation-oidc-dev serves an OpenID Connect provider for trying out
attestation's operator login without Keycloak: discovery, keys, the device
authorization grant with refresh tokens, revocation and userinfo. Its access
tokens are shaped like Keycloak's (audience in aud, realm roles in
realm_access.roles). Nobody signs in: a device login is approved for any of
the --user users on the page at /device, so keep it on loopback.`,
		Example: `  attestation-oidc-dev
  attestation-oidc-dev --listen 127.0.0.1:9400 --user alice:operator --user carol:viewer,operator`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range users {
				u, err := ParseUser(s)
				if err != nil {
					return err
				}
				o.Users = append(o.Users, u)
			}
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			// op logs refused requests through the default logger.
			slog.SetDefault(o.Logger)
			p, err := New(o)
			if err != nil {
				return err
			}
			printHowTo(cmd.OutOrStdout(), p)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return p.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Addr, "listen", DefaultListen, "TCP address to serve on")
	f.StringVar(&o.Issuer, "issuer", "", "issuer URL, when clients reach the provider by another name (default http://LISTEN)")
	f.StringVar(&o.ClientID, "client-id", DefaultClientID, "ID of the public client")
	f.StringVar(&o.Audience, "audience", DefaultAudience, "audience put in every access token")
	f.StringArrayVar(&users, "user", DefaultUsers, "a user, USERNAME[:ROLE,...] (repeatable)")
	f.DurationVar(&o.AccessTokenLifetime, "access-token-lifetime", DefaultAccessTokenLifetime, "how long access tokens last")
	f.DurationVar(&o.PollInterval, "poll-interval", DefaultPollInterval, "how often device logins poll (whole seconds)")
	return cmd
}

func printHowTo(w io.Writer, p *Provider) {
	fmt.Fprintf(w, "OIDC provider (development) at %s, client %s, audience %s\n", p.Issuer(), p.ClientID(), p.Audience())
	for _, u := range p.Users() {
		fmt.Fprintf(w, "  user %-12s roles %s\n", u.Username, strings.Join(u.Roles, ","))
	}
	fmt.Fprintf(w, `
daemon:   attestationd --oidc-issuer %[1]s --oidc-audience %[2]s
log in:   attestation auth login --issuer %[1]s --client-id %[3]s
approve:  open %[4]s, enter the code the login prints, pick a user
`, p.Issuer(), p.Audience(), p.ClientID(), p.DeviceURL())
}

// Main runs the command line with args and returns the exit code.
func Main(args []string) int {
	cmd := Command()
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "attestation-oidc-dev:", err)
		return 1
	}
	return 0
}
