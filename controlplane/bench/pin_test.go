package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cpuPin keeps a storm's two sides apart: the daemon on one CPU, the load
// generator (this process, every thread of it) on another, so that neither
// takes CPU time from the other and the daemon's figures are those of one
// core. A cgroup cpuset enforces it where this process may make one (it
// holds every thread, those made later included, and the daemon cannot
// leave it); elsewhere taskset starts the daemon and sched_setaffinity pins
// each thread of this process, which threads made later inherit. Either
// way verify reads back every thread's Cpus_allowed_list.
type cpuPin struct {
	daemonCPU, loadCPU int
	// how says what enforces the pinning, for the report.
	how string
	// procs is the cgroup.procs file of the daemon's cpuset, "" under
	// taskset; a process that writes its PID there moves into it.
	procs string
	// undo puts this process back as it was, in reverse order.
	undo []func() error
}

// errTooFewCPUs: the two sides cannot have a CPU each.
var errTooFewCPUs = errors.New("fewer than 2 CPUs")

// pinStorm pins this process to the second CPU it may use and makes the
// daemons it starts run on the first, until the end of tb. It fails tb
// when pinning is impossible, through missing when the machine has fewer
// than 2 CPUs (so that an integration test can say what is missing).
func pinStorm(tb testing.TB, missing func(tb testing.TB, format string, args ...any)) *cpuPin {
	tb.Helper()
	needCPUs(tb, missing)
	p, err := newCPUPin()
	if err != nil {
		tb.Fatalf("pin the storm: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.restore(); err != nil {
			tb.Errorf("unpin: %v", err)
		}
	})
	return p
}

// fatalf is pinStorm's missing for a benchmark: too few CPUs fail it.
func fatalf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	tb.Fatalf(format, args...)
}

// needCPUs ends tb through missing unless the storm can have a CPU for
// each side: a check before the work that precedes pinStorm.
func needCPUs(tb testing.TB, missing func(tb testing.TB, format string, args ...any)) {
	tb.Helper()
	if _, _, err := stormCPUs(); err != nil {
		missing(tb, "the storm pins the daemon and the load generator to a CPU each: %v", err)
	}
}

// stormCPUs are the first two CPUs this process may use, for the daemon
// and the load generator, and all of them.
func stormCPUs() (cpus []int, set unix.CPUSet, err error) {
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, set, fmt.Errorf("read this process's CPUs: %w", err)
	}
	for c := 0; c < len(set)*64 && len(cpus) < 2; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return nil, set, fmt.Errorf("%w: this process may run on %d", errTooFewCPUs, set.Count())
	}
	return cpus, set, nil
}

func newCPUPin() (*cpuPin, error) {
	cpus, set, err := stormCPUs()
	if err != nil {
		return nil, err
	}
	p := &cpuPin{daemonCPU: cpus[0], loadCPU: cpus[1]}
	cgErr := p.cpusets()
	// Last of all, this process's threads get their CPUs back (leaving
	// the cpuset gave them the home cgroup's).
	p.undo = append([]func() error{func() error { return setAffinity(&set) }}, p.undo...)
	if cgErr == nil {
		p.pinRuntime()
		return p, nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, fmt.Errorf("no cgroup cpuset (%v) and no taskset (Debian package util-linux)", cgErr)
	}
	var one unix.CPUSet
	one.Set(p.loadCPU)
	if err := setAffinity(&one); err != nil {
		p.restore()
		return nil, fmt.Errorf("pin the load generator to CPU %d: %w", p.loadCPU, err)
	}
	p.how = fmt.Sprintf("taskset -c %d for the daemon, sched_setaffinity of every thread for the load generator (no cgroup cpuset: %v)", p.daemonCPU, cgErr)
	p.pinRuntime()
	return p, nil
}

// pinRuntime tells the Go runtime it has the one CPU: with more Ps than
// CPUs its idle Ps would spin for work on the load generator's core.
func (p *cpuPin) pinRuntime() {
	was := runtime.GOMAXPROCS(1)
	p.undo = append(p.undo, func() error { runtime.GOMAXPROCS(was); return nil })
}

// cpusets makes a cpuset cgroup for each side, with cgroup v2 where its
// cpuset controller is enabled at the root, else cgroup v1's cpuset
// hierarchy, and moves this process into the load generator's.
func (p *cpuPin) cpusets() error {
	root, version, err := cpusetRoot()
	if err != nil {
		return err
	}
	home, err := ownCgroup(root, version)
	if err != nil {
		return err
	}
	removeStaleCpusets(root)
	mems, err := os.ReadFile(filepath.Join(root, map[int]string{1: "cpuset.mems", 2: "cpuset.mems.effective"}[version]))
	if err != nil {
		return fmt.Errorf("read the memory nodes: %w", err)
	}
	made := func(side string, cpu int) (string, error) {
		dir := filepath.Join(root, fmt.Sprintf("attestation-bench-%d-%s", os.Getpid(), side))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", err
		}
		p.undo = append(p.undo, func() error { return removeCgroup(dir) })
		if err := os.WriteFile(filepath.Join(dir, "cpuset.cpus"), []byte(strconv.Itoa(cpu)), 0); err != nil {
			return "", fmt.Errorf("%s: cpuset.cpus: %w", dir, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cpuset.mems"), mems, 0); err != nil {
			return "", fmt.Errorf("%s: cpuset.mems: %w", dir, err)
		}
		return dir, nil
	}
	fail := func(err error) error {
		p.restore()
		return err
	}
	daemonDir, err := made("daemon", p.daemonCPU)
	if err != nil {
		return fail(err)
	}
	loadDir, err := made("loadgen", p.loadCPU)
	if err != nil {
		return fail(err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(loadDir, "cgroup.procs"), pid, 0); err != nil {
		return fail(fmt.Errorf("move this process into %s: %w", loadDir, err))
	}
	p.undo = append(p.undo, func() error { return os.WriteFile(filepath.Join(home, "cgroup.procs"), pid, 0) })
	p.procs = filepath.Join(daemonDir, "cgroup.procs")
	p.how = fmt.Sprintf("cgroup v%d cpuset: the daemon in %s (CPU %d), the load generator in %s (CPU %d)",
		version, daemonDir, p.daemonCPU, loadDir, p.loadCPU)
	return nil
}

// cpusetRoot finds the root of a cpuset cgroup hierarchy this process may
// write: cgroup v2 with the cpuset controller enabled for the root's
// children, or cgroup v1's cpuset hierarchy.
func cpusetRoot() (root string, version int, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var v1 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent dev root mountpoint options ... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 3 || fields[3] != "/" {
			continue
		}
		switch mount := fields[4]; tail[0] {
		case "cgroup2":
			ctl, err := os.ReadFile(filepath.Join(mount, "cgroup.subtree_control"))
			if err == nil && slices.Contains(strings.Fields(string(ctl)), "cpuset") && unix.Access(mount, unix.W_OK) == nil {
				return mount, 2, nil
			}
		case "cgroup":
			if slices.Contains(strings.Split(tail[2], ","), "cpuset") && unix.Access(mount, unix.W_OK) == nil {
				v1 = mount
			}
		}
	}
	if v1 != "" {
		return v1, 1, nil
	}
	return "", 0, errors.New("no writable cpuset cgroup hierarchy (cgroup v2 with cpuset enabled at its root, or cgroup v1 cpuset)")
}

// ownCgroup is the directory of this process's cgroup in the hierarchy of
// the version, to return to at the end.
func ownCgroup(root string, version int) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-ID:controllers:path
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if (version == 2 && f[0] == "0" && f[1] == "") || (version == 1 && slices.Contains(strings.Split(f[1], ","), "cpuset")) {
			return filepath.Join(root, f[2]), nil
		}
	}
	return "", fmt.Errorf("this process's cpuset cgroup is not in /proc/self/cgroup")
}

// removeStaleCpusets removes the cpusets of earlier runs whose process is
// gone (killed before it could clean up).
func removeStaleCpusets(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, "attestation-bench-*-*"))
	for _, dir := range dirs {
		f := strings.Split(filepath.Base(dir), "-")
		if pid, err := strconv.Atoi(f[2]); err == nil && unix.Kill(pid, 0) == syscall.ESRCH {
			removeCgroup(dir)
		}
	}
}

// removeCgroup removes an emptied cgroup; the kernel may take a moment
// to let go of a process that just exited.
func removeCgroup(dir string) error {
	var err error
	for range 50 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// restore puts this process back on the CPUs and in the cgroup it had.
func (p *cpuPin) restore() error {
	var errs []error
	for i := len(p.undo) - 1; i >= 0; i-- {
		errs = append(errs, p.undo[i]())
	}
	p.undo = nil
	return errors.Join(errs...)
}

// command is the command that runs bin with args on the daemon's CPU, from
// its first instruction (so that the Go runtime sizes GOMAXPROCS for it).
func (p *cpuPin) command(bin string, args ...string) *exec.Cmd {
	if p.procs != "" {
		return exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, p.procs, bin}, args...)...)
	}
	return exec.Command("taskset", append([]string{"-c", strconv.Itoa(p.daemonCPU), bin}, args...)...)
}

// verify reads back the CPUs every thread of the daemon (pid) and of this
// process may run on, and describes what it found; any thread allowed
// elsewhere is an error.
func (p *cpuPin) verify(pid int) (string, error) {
	nd, err := threadsOn(pid, p.daemonCPU)
	if err != nil {
		return "", fmt.Errorf("daemon: %w", err)
	}
	nl, err := threadsOn(os.Getpid(), p.loadCPU)
	if err != nil {
		return "", fmt.Errorf("load generator: %w", err)
	}
	return fmt.Sprintf("verified from /proc: all %d daemon threads allowed CPU %d only, all %d load generator threads CPU %d only",
		nd, p.daemonCPU, nl, p.loadCPU), nil
}

// threadsOn checks that every thread of pid may run on cpu alone and
// returns how many it checked.
func threadsOn(pid, cpu int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tasks {
		allowed, err := procField(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()), "Cpus_allowed_list")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return n, err
		}
		if allowed != strconv.Itoa(cpu) {
			return n, fmt.Errorf("thread %s of process %d may run on CPUs %s, want %d only", t.Name(), pid, allowed, cpu)
		}
		n++
	}
	return n, nil
}

// procField is the value of a "Name:\tvalue" line of a /proc status file.
func procField(path, name string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in %s", name, path)
}

// setAffinity sets the CPUs of every thread of this process. A thread made
// while it runs inherits its maker's CPUs, which may be the old ones if
// the maker was not set yet: so it goes over the threads again until a
// pass finds them all set.
func setAffinity(set *unix.CPUSet) error {
	for pass := 0; ; pass++ {
		if pass == 100 {
			return errors.New("threads keep appearing with other CPUs")
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, _ := strconv.Atoi(t.Name())
			var have unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &have); errors.Is(err, unix.ESRCH) {
				continue
			} else if err != nil {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			if have == *set {
				continue
			}
			changed = true
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
		}
		if !changed {
			return nil
		}
	}
}

// cpuTicks is what /proc/stat says one CPU did since boot.
type cpuTicks struct{ busy, idle, steal time.Duration }

// readCPUTicks reads the times of cpu from /proc/stat.
func readCPUTicks(cpu int) (cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}, err
	}
	prefix := fmt.Sprintf("cpu%d ", cpu)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		// user nice system idle iowait irq softirq steal (guest time is
		// in user already), in USER_HZ ticks.
		f := strings.Fields(line)[1:]
		if len(f) < 8 {
			break
		}
		var t [8]time.Duration
		for i := range t {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return cpuTicks{}, fmt.Errorf("/proc/stat %s: %w", prefix, err)
			}
			t[i] = time.Duration(n) * time.Second / userHZ
		}
		return cpuTicks{busy: t[0] + t[1] + t[2] + t[5] + t[6], idle: t[3] + t[4], steal: t[7]}, nil
	}
	return cpuTicks{}, fmt.Errorf("no %sin /proc/stat", prefix)
}

// userHZ is the unit of the times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100
