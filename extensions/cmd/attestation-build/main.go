// Command attestation-build builds attestationd and attestation with
// extensions from other modules:
//
//	go run ./extensions/cmd/attestation-build --with github.com/acme/attestation-cmdb@v1.2.0 --with ../my-extension
//
// See docs/extensions.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/attestation/attestation/extensions/builder"
	"github.com/attestation/attestation/internal/version"
)

// withs is the repeatable --with flag.
type withs []string

func (w *withs) String() string     { return strings.Join(*w, ",") }
func (w *withs) Set(s string) error { *w = append(*w, s); return nil }

func main() {
	var o builder.Options
	fs := flag.NewFlagSet("attestation-build", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: attestation-build [--with PACKAGE[@VERSION] | --with DIR]... [--output DIR]

Builds attestationd and attestation with the extensions that ship plus the
ones named by --with: a package path at a version (none: the latest), or
a local directory inside a Go module, which the build uses in place
(a replace). The versions are pinned in the generated go.mod (--work keeps
it).

`)
		fs.PrintDefaults()
	}
	fs.Var((*withs)(&o.With), "with", "an extension to add: `PACKAGE[@VERSION]` or a directory (./x, ../x, /x); repeatable")
	fs.StringVar(&o.Output, "output", "bin", "the `directory` the binaries are written to")
	fs.StringVar(&o.Source, "attestation-dir", "", "the checkout of attestation to build (default: the one holding the current directory)")
	fs.StringVar(&o.Version, "stamp", "", "the `version` the binaries print (default: git describe of the checkout)")
	fs.StringVar(&o.WorkDir, "work", "", "keep the generated module in this `directory` (default: a temporary one, removed)")
	showVersion := fs.Bool("version", false, "print attestation-build's own build and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		os.Exit(2)
	}
	if *showVersion {
		fmt.Print(version.Get().Format("attestation-build", nil))
		return
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "attestation-build: unexpected argument %q (extensions are given with --with)\n", fs.Arg(0))
		os.Exit(2)
	}
	if o.Source == "" {
		wd, err := os.Getwd()
		if err == nil {
			o.Source, err = builder.FindSource(wd)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "attestation-build: %v: run it in the checkout or pass --attestation-dir\n", err)
			os.Exit(2)
		}
	}
	o.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := builder.Build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attestation-build:", err)
		os.Exit(1)
	}
	fmt.Printf("built %s (version %s) with the extensions that ship and:\n", strings.Join(res.Binaries, ", "), orDevel(res.Version))
	for _, e := range res.Extensions {
		if e.Replace != "" {
			fmt.Printf("  %s => %s\n", e.Package, e.Replace)
		} else {
			fmt.Printf("  %s (%s %s)\n", e.Package, e.Module, e.Version)
		}
	}
}

func orDevel(v string) string {
	if v == "" {
		return "devel"
	}
	return v
}
