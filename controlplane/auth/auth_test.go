package auth_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/auth"
)

func header(authorization string) http.Header {
	h := http.Header{}
	if authorization != "" {
		h.Set("Authorization", authorization)
	}
	return h
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		name, header, want string
		ok                 bool
	}{
		{"bearer", "Bearer abc", "abc", true},
		{"lower-case scheme", "bearer abc", "abc", true},
		{"extra spaces", "Bearer   abc  ", "abc", true},
		{"none", "", "", false},
		{"scheme only", "Bearer", "", false},
		{"empty token", "Bearer    ", "", false},
		{"basic", "Basic abc", "", false},
		{"no scheme", "abc", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := auth.BearerToken(header(c.header))
			if got != c.want || ok != c.ok {
				t.Errorf("got %q, %v, want %q, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestStaticToken(t *testing.T) {
	a := auth.NewStaticToken("s3cret", "admin-token")
	cases := []struct {
		name    string
		header  string
		wantErr error
	}{
		{"right token", "Bearer s3cret", nil},
		{"wrong token", "Bearer s3cre", auth.ErrBadCredentials},
		{"token with a suffix", "Bearer s3cret2", auth.ErrBadCredentials},
		{"no header", "", auth.ErrNoCredentials},
		{"other scheme", "Basic s3cret", auth.ErrNoCredentials},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := a.Authenticate(context.Background(), header(c.header))
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
			if c.wantErr != nil {
				if p != nil {
					t.Errorf("got principal %+v, want none", p)
				}
				return
			}
			if p.Subject != "admin-token" || !p.Has(auth.Admin) || !p.Has(auth.Viewer) {
				t.Errorf("got %+v, want admin-token holding every role", p)
			}
		})
	}
}

func TestPrincipalHas(t *testing.T) {
	cases := []struct {
		name  string
		roles []auth.Role
		check auth.Role
		want  bool
	}{
		{"has it", []auth.Role{auth.Viewer}, auth.Viewer, true},
		{"lacks it", []auth.Role{auth.Viewer}, auth.Operator, false},
		{"admin has all", []auth.Role{auth.Admin}, auth.Operator, true},
		{"none", nil, auth.Viewer, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &auth.Principal{Subject: "x", Roles: c.roles}
			if got := p.Has(c.check); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestChain(t *testing.T) {
	chain := auth.Chain{auth.NewStaticToken("one", "first"), auth.NewStaticToken("two", "second")}
	cases := []struct {
		name, header, subject string
		wantErr               error
	}{
		{"first", "Bearer one", "first", nil},
		{"second", "Bearer two", "second", nil},
		{"neither", "Bearer three", "", auth.ErrBadCredentials},
		{"no credentials", "", "", auth.ErrNoCredentials},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := chain.Authenticate(context.Background(), header(c.header))
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
			if c.wantErr == nil && p.Subject != c.subject {
				t.Errorf("got subject %q, want %q", p.Subject, c.subject)
			}
		})
	}
}

func TestPrincipalContext(t *testing.T) {
	if _, ok := auth.PrincipalFrom(context.Background()); ok {
		t.Error("got a principal from an empty context, want none")
	}
	p := &auth.Principal{Subject: "alice"}
	if got, ok := auth.PrincipalFrom(auth.WithPrincipal(context.Background(), p)); !ok || got != p {
		t.Errorf("got %v, %v, want %v", got, ok, p)
	}
}

func TestLoadOrCreateToken(t *testing.T) {
	t.Run("creates", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "admin-token")
		tok, created, err := auth.LoadOrCreateToken(path)
		if err != nil || !created || len(tok) != 64 {
			t.Fatalf("got %q, %v, %v, want a new 64-digit token", tok, created, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("got mode %o, want 600", perm)
		}
		again, created, err := auth.LoadOrCreateToken(path)
		if err != nil || created || again != tok {
			t.Errorf("second load: got %q, %v, %v, want %q, false, nil", again, created, err, tok)
		}
	})
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		wantErr string
	}{
		{"existing", "  abc\n", 0o600, "abc", ""},
		{"readable by others", "abc\n", 0o644, "", "chmod 600"},
		{"empty", " \n", 0o600, "", "is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "admin-token")
			if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			tok, created, err := auth.LoadOrCreateToken(path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %q, %v, want an error saying %q", tok, err, c.wantErr)
				}
				return
			}
			if err != nil || created || tok != c.want {
				t.Errorf("got %q, %v, %v, want %q, false, nil", tok, created, err, c.want)
			}
		})
	}
	t.Run("unreadable path", func(t *testing.T) {
		dir := t.TempDir()
		if _, _, err := auth.LoadOrCreateToken(dir); err == nil {
			t.Error("got no error for a directory, want one")
		}
	})
}
