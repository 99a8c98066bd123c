package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// txcoordEnvOverrides are the variables txcoord's ApplyEnv reads. They are
// removed from the child's environment so that the generated file is what
// the child runs with: scripts/pg.sh, for one, reads TXCOORD_DATA_DIR as the
// parent of all development data, which as txcoord's data_dir would put the
// decision store in the wrong place.
var txcoordEnvOverrides = []string{
	"TXCOORD_NODE_ID", "TXCOORD_CLUSTER_ID", "TXCOORD_LISTEN", "TXCOORD_DATA_DIR",
	"TXCOORD_RAFT_BIND", "TXCOORD_LOG_LEVEL",
}

// ChildEnv returns env without the txcoord override variables, plus extra
// (KEY=value entries).
func ChildEnv(env []string, extra ...string) []string {
	out := make([]string, 0, len(env)+len(extra))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, o := range txcoordEnvOverrides {
			drop = drop || name == o
		}
		for _, e := range extra {
			en, _, _ := strings.Cut(e, "=")
			drop = drop || name == en
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// Coordinator is a `txcoord serve` child process in its own process group
// (so a Ctrl-C in the terminal reaches the tool, which then stops it, and a
// kill reaches every process it started), logging to LogPath (appended to
// across restarts). Not safe for concurrent use.
type Coordinator struct {
	Binary     string   // path of the txcoord binary
	ConfigPath string   // --config
	Addr       string   // the gRPC address the config listens on
	LogPath    string   // stdout and stderr of every start, appended
	Env        []string // the child's environment (see ChildEnv)

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, set before exited closes
	starts int
}

// Start launches the process. It does not wait for it to serve: see WaitHealthy.
func (c *Coordinator) Start() error {
	if c.Running() {
		panic("demo: Coordinator.Start while the previous process runs")
	}
	if _, err := os.Stat(c.Binary); err != nil {
		return fmt.Errorf("txcoord binary %s: %w (run `make build` first)", c.Binary, err)
	}
	// Something else on Addr would answer the health checks in the child's
	// place: refuse to start rather than talk to a stranger.
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("coordinator address %s is taken (another txcoord, or a demo/bench still running?): %w", c.Addr, err)
	}
	ln.Close()
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("coordinator log: %w", err)
	}
	c.starts++
	fmt.Fprintf(logf, "\n=== start %d at %s: %s serve --config %s\n", c.starts,
		time.Now().Format(time.RFC3339Nano), c.Binary, c.ConfigPath)
	cmd := exec.Command(c.Binary, "serve", "--config", c.ConfigPath)
	cmd.Env = c.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", c.Binary, err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return nil
}

// Pid is the process id of the current process (0 if none was started).
func (c *Coordinator) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Running reports whether the last started process has not exited.
func (c *Coordinator) Running() bool {
	if c.exited == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// WaitHealthy polls the gRPC health service until it answers SERVING (the
// node is leader and has finished start-up recovery), the process exits, or
// timeout passes. It returns how long it waited.
func (c *Coordinator) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("health check of %s: %w", c.Addr, err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	last := errors.New("no answer yet")
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		switch {
		case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			return time.Since(t0), nil
		case err == nil:
			last = fmt.Errorf("health status %s", resp.GetStatus())
		default:
			last = err
		}
		select {
		case <-c.exited:
			return time.Since(t0), fmt.Errorf("coordinator exited (%v) before it was healthy; log %s:\n%s",
				c.err, c.LogPath, LogTail(c.LogPath, 15))
		case <-ctx.Done():
			return time.Since(t0), fmt.Errorf("coordinator at %s not healthy after %s (last: %v); log %s:\n%s",
				c.Addr, timeout, last, c.LogPath, LogTail(c.LogPath, 15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to the process group and waits (at most 10 s) for the
// process to be reaped. It returns how long that took.
func (c *Coordinator) Kill() (time.Duration, error) {
	if !c.Running() {
		return 0, errors.New("kill: coordinator is not running")
	}
	t0 := time.Now()
	pid := c.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill process group %d: %w", pid, err)
	}
	select {
	case <-c.exited:
		return time.Since(t0), nil
	case <-time.After(10 * time.Second):
		return time.Since(t0), fmt.Errorf("process %d did not exit within 10s of SIGKILL", pid)
	}
}

// Stop asks the process to shut down (SIGTERM to its group) and SIGKILLs the
// group after grace. A process that already exited is not an error.
func (c *Coordinator) Stop(grace time.Duration) error {
	if !c.Running() {
		return nil
	}
	pid := c.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop process group %d: %w", pid, err)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(grace):
	}
	_, err := c.Kill()
	return err
}

// LogTail returns the last n lines of the file at path, indented, for error
// messages ("" if it cannot be read).
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("    ")
		sb.Write(l)
		sb.WriteByte('\n')
	}
	return sb.String()
}
