// Command attestation-image builds attestation's OCI image from the static
// binaries (make static) without a container engine, into an OCI layout
// directory and a tarball for docker load or podman load. make image runs
// it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/attestation/attestation/packaging/image"
)

func main() {
	var (
		o                    image.Options
		ref, layout, tarPath string
	)
	flag.StringVar(&o.Bin, "bin", "bin/static", "the `directory` of the static attestationd and attestation")
	flag.StringVar(&o.Version, "version", "", "the version the image is labelled with")
	flag.StringVar(&ref, "tag", "", "the image's name (default attestationd:VERSION, or attestationd:devel)")
	flag.StringVar(&layout, "layout", "dist/image", "the OCI image layout `directory` to write (replaced)")
	flag.StringVar(&tarPath, "tarball", "dist/attestation-image.tar", "the `file` to write for docker load and podman load (empty: none)")
	flag.Parse()
	if ref == "" {
		ref = "attestationd:devel"
		if o.Version != "" {
			ref = "attestationd:" + o.Version
		}
	}
	// SOURCE_DATE_EPOCH, as reproducible builds set it: the time of every
	// file and of the image.
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "attestation-image: SOURCE_DATE_EPOCH=%q is not a number of seconds\n", s)
			os.Exit(2)
		}
		o.Time = time.Unix(sec, 0)
	}
	o.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	img, err := image.Build(ctx, o)
	if err == nil {
		err = image.Write(img, ref, layout, tarPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attestation-image:", err)
		os.Exit(1)
	}
	digest, err := img.Digest()
	if err != nil {
		fmt.Fprintln(os.Stderr, "attestation-image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", ref, digest)
}
