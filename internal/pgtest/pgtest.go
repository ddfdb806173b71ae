// Package pgtest runs a real PostgreSQL server for tests: one per test
// binary, started at the first test that asks for a database, listening
// on a Unix socket in a temporary directory only (never TCP), with fsync
// on, and a fresh database for each test.
//
// The server is Debian's (package postgresql: initdb and postgres under
// /usr/lib/postgresql/VERSION/bin). PostgreSQL refuses to run as root, so
// as root the server runs as the postgres user that package creates (or
// nobody). Where PostgreSQL is missing, a test skips naming it, or fails
// under CI (internal/testenv).
//
// A package whose tests use it stops the server at the end with
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
//
// and, should the test binary die without, the server goes with it: it is
// the binary's child, with the parent-death signal set.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/attestation/attestation/internal/testenv"
)

// server is the test binary's server, started once.
var (
	once    sync.Once
	srv     *server
	srvErr  error
	missing string
	dbs     atomic.Int64
)

type server struct {
	dir, sock, user string
	cmd             *exec.Cmd
	exited          chan struct{}
	log             string
}

// DSN creates a fresh database on the test binary's server, starting the
// server if needed, and returns its URL (postgres:///NAME?host=SOCKETDIR&
// user=USER). The database is dropped when the test ends. Without
// PostgreSQL the test ends through testenv.Missing.
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv, missing, srvErr = start() })
	if missing != "" {
		testenv.Missing(t, "%s", missing)
	}
	if srvErr != nil {
		t.Fatalf("start PostgreSQL: %v", srvErr)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbs.Add(1))
	admin, err := sql.Open("pgx", srv.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(t.Context(), `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", srv.dsn("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(`DROP DATABASE ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return srv.dsn(name)
}

// Run runs the tests and stops the server, if one was started; use it in
// TestMain.
func Run(m *testing.M) int {
	code := m.Run()
	if srv != nil {
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

func (s *server) dsn(db string) string {
	q := url.Values{"host": {s.sock}, "user": {s.user}}
	return "postgres:///" + db + "?" + q.Encode()
}

// binDir finds the newest /usr/lib/postgresql/VERSION/bin with initdb
// and postgres.
func binDir() (string, bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, true
		}
	}
	return "", false
}

// runAs is who the server runs as: root cannot run PostgreSQL.
func runAs() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return nil, "", err
		}
		return nil, u.Username, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name, nil
	}
	return nil, "", fmt.Errorf("running as root, and neither a postgres nor a nobody user to run PostgreSQL as")
}

// start makes a cluster in a temporary directory and starts its server.
// missing says what the machine lacks, for testenv.Missing.
func start() (s *server, missing string, err error) {
	bin, ok := binDir()
	if !ok {
		return nil, "no initdb and postgres under /usr/lib/postgresql/*/bin (Debian package postgresql)", nil
	}
	cred, name, err := runAs()
	if err != nil {
		return nil, "", err
	}
	// Not t.TempDir: the server's user must reach it, and it outlives
	// the test that started it.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, "", err
	}
	s = &server{dir: dir, sock: dir, user: name, exited: make(chan struct{}), log: filepath.Join(dir, "server.log")}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, "", err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "--pgdata", data, "--username", name,
		"--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	logf, err := os.Create(s.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=300",
		"-c", "shared_buffers=32MB")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Dir = dir
	// SIGQUIT, the immediate shutdown, should the test binary die
	// before it stops the server.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal goes when the thread that started the
		// child ends: this one, locked, lives as long as the server.
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("start postgres: %w", err)
	}
	if err := s.ready(30 * time.Second); err != nil {
		s.stop()
		return nil, "", err
	}
	return s, "", nil
}

// ready waits until the server accepts connections.
func (s *server) ready(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		db, err := sql.Open("pgx", s.dsn("postgres"))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-s.exited:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("postgres exited before it was ready:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("postgres not ready after %s: %v\n%s", limit, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down (a fast shutdown: sessions are ended) and
// removes its directory.
func (s *server) stop() error {
	s.cmd.Process.Signal(syscall.SIGINT)
	var err error
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		err = fmt.Errorf("postgres did not stop within 30s: killed")
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
