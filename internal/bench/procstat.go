package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat: 100 on every architecture Go supports on Linux.
const clockTicks = 100

// procCPU returns the CPU time (user + system) a process has used, and with
// children, also that of its reaped children (cutime + cstime): a
// PostgreSQL postmaster accounts for backends that exited there.
func procCPU(pid int, children bool) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, so f[11].
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	last := 12
	if children {
		last = 14
	}
	var ticks int64
	for _, s := range f[11 : last+1] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procPPID returns a process's parent pid.
func procPPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.Atoi(f[1])
}

// procRSS returns a process's resident set size (VmRSS) in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// treeCPU is the CPU time of a process and all its descendants, live or
// reaped (a server that forks a process per connection, like PostgreSQL).
func treeCPU(root int) (time.Duration, error) {
	total, err := procCPU(root, true)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := procPPID(pid); err == nil && ppid == root {
			if d, err := procCPU(pid, false); err == nil {
				total += d
			}
		}
	}
	return total, nil
}

// findProcess returns the pid of the first process whose command line
// (arguments joined by spaces) satisfies match, or 0.
func findProcess(match func(cmdline string) bool) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))) {
			return pid
		}
	}
	return 0
}

// findPostmaster returns the pid of the PostgreSQL postmaster listening on
// port: a `postgres -D dir` process whose dir/postmaster.pid names it and
// the port. 0 if none is found (the database runs elsewhere).
func findPostmaster(port int) int {
	want := strconv.Itoa(port)
	return findProcess(func(cmd string) bool {
		f := strings.Fields(cmd)
		if len(f) < 3 || filepath.Base(f[0]) != "postgres" {
			return false
		}
		for i := 1; i+1 < len(f); i++ {
			if f[i] != "-D" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(f[i+1], "postmaster.pid"))
			if err != nil {
				return false
			}
			lines := strings.Split(string(b), "\n")
			return len(lines) > 3 && strings.TrimSpace(lines[3]) == want
		}
		return false
	})
}

// findSurrealServer returns the pid of the development SurrealDB server
// (devdb/surreal-server) listening on port, or 0.
func findSurrealServer(port int) int {
	want := "--port " + strconv.Itoa(port)
	return findProcess(func(cmd string) bool {
		return strings.Contains(cmd, "surreal-server/server.js") &&
			(strings.Contains(cmd, want+" ") || strings.HasSuffix(cmd, want))
	})
}

// Usage is the resources processes used during one measurement.
type Usage struct {
	// CoordCPUSec: CPU seconds of every coordinator node together;
	// LeaderCPUSec of the leader alone.
	CoordCPUSec  float64 `json:"coord_cpu_s"`
	LeaderCPUSec float64 `json:"leader_cpu_s"`
	// LeaderPeakRSSMiB: the highest resident set of the leader sampled
	// during the measurement; PeakRSSMiB the highest of any node.
	LeaderPeakRSSMiB float64 `json:"leader_peak_rss_mib"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"`
	// PGCPUSec and SurrealCPUSec: CPU of the database servers (0 when not
	// found on this machine). They include anything else using the same
	// servers at the time (other test runs on a shared machine).
	PGCPUSec      float64 `json:"pg_cpu_s"`
	SurrealCPUSec float64 `json:"surreal_cpu_s"`
	// ClientCPUSec: this process (the benchmark's clients: the txcoord
	// client library, or pgx and the SurrealDB connections for the baseline).
	ClientCPUSec float64 `json:"client_cpu_s"`
	// MachineCPUSec: all CPU time used on the machine (from /proc/stat),
	// to tell how busy it was; MachineCPUs is the number of CPUs.
	MachineCPUSec float64 `json:"machine_cpu_s"`
}

// machineCPU returns the CPU time spent not idle on the whole machine.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, s := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(s, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// monitor samples the CPU and RSS of a set of processes between start and
// stop. The zero pid is skipped.
type monitor struct {
	coords   []int // coordinator pids
	leader   int   // index into coords, -1 if unknown
	pg, surr int

	mu      sync.Mutex
	cpu0    []time.Duration
	pg0     time.Duration
	surr0   time.Duration
	self0   time.Duration
	mach0   time.Duration
	peak    []int64
	stopped chan struct{}
	done    chan struct{}
}

func newMonitor(coords []int, leader, pg, surr int) *monitor {
	return &monitor{coords: coords, leader: leader, pg: pg, surr: surr}
}

// start takes the first CPU readings and samples RSS every 100 ms.
func (m *monitor) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cpu0 = make([]time.Duration, len(m.coords))
	m.peak = make([]int64, len(m.coords))
	for i, pid := range m.coords {
		m.cpu0[i], _ = procCPU(pid, false)
		m.peak[i], _ = procRSS(pid)
	}
	if m.pg != 0 {
		m.pg0, _ = treeCPU(m.pg)
	}
	if m.surr != 0 {
		m.surr0, _ = procCPU(m.surr, true)
	}
	m.mach0 = machineCPU()
	m.self0, _ = procCPU(os.Getpid(), false)
	m.stopped, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stopped:
				return
			case <-t.C:
			}
			m.sampleRSS()
		}
	}()
}

func (m *monitor) sampleRSS() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, pid := range m.coords {
		if r, err := procRSS(pid); err == nil && r > m.peak[i] {
			m.peak[i] = r
		}
	}
}

// stop ends the sampling and returns what was used since start.
func (m *monitor) stop() Usage {
	if m.stopped == nil {
		return Usage{}
	}
	close(m.stopped)
	<-m.done
	m.sampleRSS()
	m.mu.Lock()
	defer m.mu.Unlock()
	var u Usage
	const mib = 1 << 20
	for i, pid := range m.coords {
		c, err := procCPU(pid, false)
		if err != nil {
			continue
		}
		d := (c - m.cpu0[i]).Seconds()
		u.CoordCPUSec += d
		rss := float64(m.peak[i]) / mib
		u.PeakRSSMiB = max(u.PeakRSSMiB, rss)
		if i == m.leader {
			u.LeaderCPUSec, u.LeaderPeakRSSMiB = d, rss
		}
	}
	if m.pg != 0 {
		if c, err := treeCPU(m.pg); err == nil {
			u.PGCPUSec = (c - m.pg0).Seconds()
		}
	}
	if m.surr != 0 {
		if c, err := procCPU(m.surr, true); err == nil {
			u.SurrealCPUSec = (c - m.surr0).Seconds()
		}
	}
	u.MachineCPUSec = (machineCPU() - m.mach0).Seconds()
	if c, err := procCPU(os.Getpid(), false); err == nil {
		u.ClientCPUSec = (c - m.self0).Seconds()
	}
	return u
}
