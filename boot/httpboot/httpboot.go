// Package httpboot serves network boot over HTTP on the API listener,
// without authentication (a booting machine has no credentials):
//
//	GET /boot/ipxe?mac=MAC&uuid=UUID&arch=ARCH  the machine's iPXE script
//	GET|HEAD /boot/assets/NAME                  a file of the boot assets
//	                                            directory (kernel, agent
//	                                            initramfs, iPXE EFI binaries)
//
// Assets are opened through an os.Root, so no name ("..", an absolute
// path, a symlink pointing outside) reaches a file outside the directory.
// They are served with Content-Length, Last-Modified, ETag, HEAD and
// single byte ranges (206, or 416 when unsatisfiable; a multi-range
// request gets the whole file), and never a redirect: UEFI HTTP boot
// firmwares do not follow them. That is also why [Server.Handler] sits in
// front of the API's mux, which would redirect a non-canonical path such
// as /boot/assets/../x instead of refusing it.
//
// A machine that would boot the agent while the directory lacks its
// kernel or initramfs gets a script that shows, on its console, what is
// missing and how to build it, then leaves network boot, instead of one
// that fetches files that are not there. The files are looked for at each
// request, so building them fixes it without a restart.
//
// A decommissioned machine's script request gets 403 with a script body
// that says why (iPXE runs no script it got with an error status, so the
// firmware moves on to its next boot option); a store that cannot be read
// gets 503.
package httpboot

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/ipxe"
)

// The routes.
const (
	ScriptPath = "/boot/ipxe"
	AssetsPath = boot.AssetsPath
	prefix     = "/boot/"
)

// Options configure a Server.
type Options struct {
	// Resolver decides what a script request boots.
	Resolver *boot.Resolver
	// AssetsDir is the boot assets directory; it must exist.
	AssetsDir string
	// IPXEDir, when set and present, holds the iPXE binaries: a name
	// with no slash that is not in AssetsDir is looked up there.
	IPXEDir string
	// BuildHint says how to build missing boot assets, for the consoles
	// of the machines that need them ("" says nothing).
	BuildHint string
	Logger    *slog.Logger
	// Registerer receives the metrics (nil: none are exported).
	Registerer prometheus.Registerer
}

// Server serves the boot routes.
type Server struct {
	resolver  *boot.Resolver
	assets    *os.Root
	ipxe      *os.Root // nil: none
	buildHint string
	log       *slog.Logger

	scripts  *prometheus.CounterVec
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

// New opens the assets directory and registers the metrics.
func New(o Options) (*Server, error) {
	root, err := os.OpenRoot(o.AssetsDir)
	if err != nil {
		return nil, fmt.Errorf("open boot assets directory: %w", err)
	}
	s := &Server{resolver: o.Resolver, assets: root, buildHint: o.BuildHint, log: o.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if o.IPXEDir != "" {
		if s.ipxe, err = os.OpenRoot(o.IPXEDir); err != nil {
			s.log.Warn("iPXE directory cannot be opened: only the boot assets directory is served over HTTP", "ipxe_dir", o.IPXEDir, "error", err)
			s.ipxe = nil
		}
	}
	s.scripts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestation_boot_scripts_total",
		Help: "iPXE script requests by boot decision (agent, image, local_disk, refuse, error, bad_request; no_assets: the agent's boot assets are missing) and architecture.",
	}, []string{"action", "arch"})
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestation_boot_asset_requests_total",
		Help: "Boot asset requests by HTTP status and architecture.",
	}, []string{"code", "arch"})
	s.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestation_boot_asset_bytes_total",
		Help: "Bytes of boot assets sent, by architecture.",
	}, []string{"arch"})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.scripts, s.requests, s.bytes} {
			if err := o.Registerer.Register(c); err != nil {
				s.Close()
				return nil, fmt.Errorf("register boot metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Close closes the directories.
func (s *Server) Close() error {
	if s.ipxe != nil {
		s.ipxe.Close()
	}
	return s.assets.Close()
}

// Handler serves the boot routes (every path under /boot/) and hands any
// other request to next.
func (s *Server) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix) {
			next.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	})
}

// ServeHTTP serves the boot routes; any other path is 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the boot routes serve GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	switch {
	case r.URL.Path == ScriptPath:
		s.script(w, r)
	case strings.HasPrefix(r.URL.Path, AssetsPath):
		s.asset(w, r, strings.TrimPrefix(r.URL.Path, AssetsPath))
	default:
		http.NotFound(w, r)
	}
}

// ParseQuery parses a script request's query: mac (required), uuid and
// arch (optional; see boot.ParseArch).
func ParseQuery(rawQuery string) (boot.Client, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return boot.Client{}, fmt.Errorf("query: %w", err)
	}
	var c boot.Client
	if q.Get("mac") == "" {
		return c, fmt.Errorf("query: mac is required (iPXE: mac=${net0/mac})")
	}
	if c.MAC, err = boot.ParseMAC(q.Get("mac")); err != nil {
		return boot.Client{}, err
	}
	if c.UUID, err = boot.ParseUUID(q.Get("uuid")); err != nil {
		return boot.Client{}, err
	}
	if c.Arch, err = boot.ParseArch(q.Get("arch")); err != nil {
		return boot.Client{}, err
	}
	c.IPXE = true
	return c, nil
}

func (s *Server) script(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	c, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.scripts.WithLabelValues("bad_request", "unknown").Inc()
		s.log.Warn("boot script: bad request", "remote", r.RemoteAddr, "query", r.URL.RawQuery, "error", err)
		w.WriteHeader(http.StatusBadRequest)
		w.Write(ipxe.Error(err.Error()))
		return
	}
	arch := archLabel(c.Arch)
	d, err := s.resolver.Decide(r.Context(), c)
	if err != nil {
		s.scripts.WithLabelValues("error", arch).Inc()
		s.log.Error("boot script: boot decision failed", "mac", c.MAC.String(), "arch", arch, "remote", r.RemoteAddr, "error", err)
		h.Set("Retry-After", strconv.Itoa(ipxe.RetrySeconds))
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(ipxe.Error("the boot service cannot decide now, try again"))
		return
	}
	if d.Action == boot.BootAgent {
		if missing := s.MissingAgentAssets(c.Arch); len(missing) > 0 {
			s.scripts.WithLabelValues("no_assets", arch).Inc()
			list := strings.Join(missing, ", ")
			s.log.Warn("boot script: boot assets missing, the machine cannot boot the agent", "mac", c.MAC.String(), "arch", arch,
				"missing", list, "dir", s.assets.Name(), "build", s.buildHint, "remote", r.RemoteAddr)
			lines := []string{fmt.Sprintf("cannot boot the agent: the server has no %s in its boot assets directory %s", list, s.assets.Name())}
			if s.buildHint != "" {
				lines = append(lines, "build them on the server: "+s.buildHint)
			}
			// 200: iPXE runs no script it got with an error status, and
			// this one is for the console.
			w.Write(ipxe.Unavailable(d, c, lines...))
			return
		}
	}
	s.scripts.WithLabelValues(d.Action.String(), arch).Inc()
	s.log.Info("boot script", "mac", c.MAC.String(), "uuid", c.UUID, "arch", arch, "action", d.Action.String(),
		"machine", d.MachineID, "state", d.State, "reason", d.Reason, "remote", r.RemoteAddr)
	if d.Action == boot.Refuse {
		w.WriteHeader(http.StatusForbidden)
	}
	w.Write(ipxe.Script(d, c))
}

// MissingAgentAssets names the agent's boot files for arch (its kernel
// and initramfs, relative to the assets directory) that are not there.
func (s *Server) MissingAgentAssets(arch boot.Arch) []string {
	var missing []string
	for _, name := range []string{boot.AgentKernel(arch), boot.AgentInitrd(arch)} {
		if fi, err := s.assets.Stat(name); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, name)
		}
	}
	return missing
}

// validName reports whether name is a relative, clean, slash-separated
// path: os.Root refuses escapes anyway; this refuses them before any
// file system call, and with a clearer status.
func validName(name string) bool {
	if name == "" || len(name) > 1024 || strings.ContainsAny(name, "\\\x00") {
		return false
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request, name string) {
	start := time.Now()
	// The agent's asset URLs carry who fetches them; UEFI HTTP boot
	// firmwares fetch without a query.
	var mac, arch string
	q := r.URL.Query()
	if m, err := boot.ParseMAC(q.Get("mac")); err == nil {
		mac = m.String()
	}
	a, _ := boot.ParseArch(q.Get("arch"))
	arch = archLabel(a)
	cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.requests.WithLabelValues(strconv.Itoa(cw.code), arch).Inc()
		s.bytes.WithLabelValues(arch).Add(float64(cw.n))
		level := slog.LevelInfo
		if cw.code >= 400 {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "boot asset", "asset", name, "mac", mac, "arch", arch, "method", r.Method,
			"status", cw.code, "bytes", cw.n, "range", r.Header.Get("Range"), "remote", r.RemoteAddr,
			"duration", time.Since(start))
	}()
	if !validName(name) {
		http.Error(cw, "bad asset name: want a relative path without . or .. segments", http.StatusBadRequest)
		return
	}
	f, err := s.assets.Open(name)
	if err != nil && s.ipxe != nil && !strings.Contains(name, "/") {
		f, err = s.ipxe.Open(name)
	}
	if err != nil {
		http.Error(cw, "no such boot asset", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.Error(cw, "no such boot asset", http.StatusNotFound)
		return
	}
	if strings.Contains(r.Header.Get("Range"), ",") {
		// Boot clients ask for one range; the whole file answers a
		// multi-range request correctly too.
		r.Header.Del("Range")
	}
	h := cw.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(cw, r, "", fi.ModTime(), f)
}

func archLabel(a boot.Arch) string {
	if a == boot.ArchUnknown {
		return "unknown"
	}
	return string(a)
}

// countingWriter records the status and counts the body bytes. It passes
// ReadFrom through, so a file still goes out with sendfile.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	var (
		n   int64
		err error
	)
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(c.ResponseWriter, r)
	}
	c.n += n
	return n, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
