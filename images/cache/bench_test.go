package cache_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/cache"
	"github.com/attestation/attestation/images/iso"
	"github.com/attestation/attestation/images/schematic"
)

// BenchmarkImages builds real boot assets (Debian's kernel and loaders,
// the static agent), then per iteration a new schematic's images and
// reports: the ISO's and initramfs's size, the build time, the time from
// asking for the ISO (images build) to holding all of it over HTTP, the
// same ISO's SHA-256 from two caches (they must match), and the ISO build
// beside xorriso (-as mkisofs) making the same El Torito layout from the
// same files.
func BenchmarkImages(b *testing.B) {
	for _, tool := range []string{"apt-get", "dpkg-deb", "xorriso"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not found (make test-deps installs it)", tool)
		}
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "attestation-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../../agent/cmd/attestation-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	agent, _ := os.ReadFile(bin)
	assets := filepath.Join(dir, "boot")
	if _, err := bootassets.Build(context.Background(), bootassets.Options{Out: assets, Agent: agent}); err != nil {
		b.Fatal(err)
	}
	docs := map[string][]byte{}
	newCache := func(name string) *cache.Cache {
		return cache.New(cache.Options{Dir: filepath.Join(dir, name), Assets: assets, PublicURL: "http://10.0.2.2:8080",
			Schematic: func(_ context.Context, id string) ([]byte, error) { return docs[id], nil }})
	}
	add := func(doc string) string {
		s, err := schematic.Parse([]byte(doc))
		if err != nil {
			b.Fatal(err)
		}
		docs[s.ID()] = s.Canonical()
		return s.ID()
	}

	// The same schematic in two caches: one SHA-256.
	def := add("kernel_args: [console=ttyS0]\n")
	var sums [2]string
	var img *cache.Image
	for i := range sums {
		var err error
		if img, err = newCache(fmt.Sprintf("same-%d", i)).Get(context.Background(), def, ""); err != nil {
			b.Fatal(err)
		}
		sums[i] = img.Files[cache.ISOFile].SHA256
	}
	if sums[0] != sums[1] {
		b.Fatalf("two builds of one schematic: ISO SHA-256 %s and %s", sums[0], sums[1])
	}
	b.Logf("default schematic %s: ISO SHA-256 %s in both builds", def[:12], sums[0])

	c := newCache("bench")
	srv := httptest.NewServer(c)
	defer srv.Close()
	var buildTime, served time.Duration
	cpu0 := cpuTime()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n++
		id := add(fmt.Sprintf("kernel_args: [console=ttyS0, bench.n=%d]\n", n))
		start := time.Now()
		img, err := c.Get(context.Background(), id, "")
		if err != nil {
			b.Fatal(err)
		}
		resp, err := http.Get(srv.URL + "/images/" + id + "/" + cache.ISOFile)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		served += time.Since(start)
		buildTime += img.BuildTime
		if hex.EncodeToString(h.Sum(nil)) != img.Files[cache.ISOFile].SHA256 {
			b.Fatal("the served ISO is not the built one")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(img.Files[cache.ISOFile].Size)/(1<<20), "iso_MB")
	b.ReportMetric(float64(img.Files[cache.InitrdFile].Size)/(1<<20), "initramfs_MB")
	b.ReportMetric(buildTime.Seconds()/float64(n), "build_s")
	b.ReportMetric(served.Seconds()/float64(n), "build_to_served_s")

	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(n), "cpu_s/build")

	// Our ISO writer beside xorriso, from the same files.
	ours, theirs := isoVersusXorriso(b, assets)
	b.ReportMetric(ours.Seconds(), "iso_write_s")
	b.ReportMetric(theirs.Seconds(), "xorriso_s")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "iso_vs_xorriso")
}

// isoVersusXorriso times one ISO written by images/iso and one written by
// xorriso -as mkisofs with the same files and El Torito entries (BIOS
// isolinux with a boot info table, UEFI EFI image), best of three each.
func isoVersusXorriso(b *testing.B, assets string) (ours, theirs time.Duration) {
	a, err := bootassets.Open(assets)
	if err != nil {
		b.Fatal(err)
	}
	spec := iso.Spec{Kernel: a.Path(bootassets.Kernel), Initrd: a.Path(bootassets.Initrd), Args: []string{"console=ttyS0"},
		ISOLinux: a.Path(bootassets.ISOLinux), LDLinux: a.Path(bootassets.LDLinux), GRUBEFI: a.Path(bootassets.GRUBEFI)}
	best := func(run func(i int) error) time.Duration {
		var min time.Duration
		for i := range 3 {
			start := time.Now()
			if err := run(i); err != nil {
				b.Fatal(err)
			}
			if d := time.Since(start); i == 0 || d < min {
				min = d
			}
		}
		return min
	}
	work := b.TempDir()
	ours = best(func(i int) error {
		w := filepath.Join(work, fmt.Sprint("ours-", i))
		os.Mkdir(w, 0o755)
		return iso.Write(filepath.Join(work, fmt.Sprint("ours-", i, ".iso")), w, spec)
	})
	// xorriso's input: the tree images/iso lays out, EFI image included.
	tree := filepath.Join(work, "tree")
	if err := iso.Tree(tree, spec); err != nil {
		b.Fatal(err)
	}
	theirs = best(func(i int) error {
		out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-o", filepath.Join(work, fmt.Sprint("xorriso-", i, ".iso")),
			"-V", "ATTESTATION", "-c", "isolinux/boot.cat",
			"-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
			"-eltorito-alt-boot", "-e", "boot/efiboot.img", "-no-emul-boot", tree).CombinedOutput()
		if err != nil {
			return fmt.Errorf("xorriso: %v\n%s", err, out)
		}
		return nil
	})
	return ours, theirs
}

// cpuTime is this process's user and system CPU time (getrusage): the
// builds run in it.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
