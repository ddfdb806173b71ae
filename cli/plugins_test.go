package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/extensions"
)

// broken panics wherever the CLI asks it for something.
type broken struct{}

func (broken) Info() extensions.Info {
	return extensions.Info{Name: "broken", Version: "0.0.1", Description: "panics"}
}

func (broken) Commands(extensions.CLI) ([]*cobra.Command, error) { panic("no commands today") }

func (broken) MachineSelectors(extensions.CLI) []extensions.Selector { panic("no selectors today") }

// An extension that panics while adding its commands or its machines list
// flags is reported on stderr; the rest of the CLI works.
func TestBrokenExtension(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := cli.RunWith(context.Background(), cli.Options{
		Args: []string{"machines", "list", "--help"}, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(string) string { return "" }, Extensions: []extensions.Extension{broken{}},
	})
	if code != 0 || !strings.Contains(stdout.String(), "--state") {
		t.Fatalf("machines list --help: exit %d, stdout %q; want 0 and the help", code, stdout.String())
	}
	for _, want := range []string{
		"extension broken: cannot add its commands: panicked: no commands today",
		"extension broken: cannot add its machines list flags: panicked: no selectors today",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q: want %q", stderr.String(), want)
		}
	}
}
