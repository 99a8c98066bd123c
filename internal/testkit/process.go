package testkit

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Process is one txcoord process of a test: its output goes to a log file
// and it runs in its own process group (signals reach it alone). It has no
// Pdeathsig: Linux sends that when the forking *thread* ends, which the Go
// runtime may do while the test still runs; tests stop their processes in
// Cleanup instead.
type Process struct {
	Name     string // for messages
	LogPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	exitedAt time.Time // set before exited is closed
}

// Start runs binary with args and env (added to this process's
// environment), its output in a new file logPath.
func Start(t testing.TB, name, binary string, args, env []string, logPath string) *Process {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		p.exitedAt = time.Now()
		close(p.exited)
	}()
	return p
}

// WaitHealth waits until the gRPC health service at addr answers — with
// SERVING when serving is set (the node leads and recovered), or at all —
// and fails t if the process exits first or bound passes.
func (p *Process) WaitHealth(t testing.TB, addr string, dial []grpc.DialOption, serving bool, bound time.Duration) {
	t.Helper()
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(bound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && (!serving || resp.Status == healthpb.HealthCheckResponse_SERVING) {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("txcoord %s exited during start-up; log:\n%s", p.Name, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("txcoord %s not serving after %s (last: %v); log:\n%s", p.Name, bound, err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log is the process's output so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitedAt is when the process was seen to end (zero while it runs).
func (p *Process) ExitedAt() time.Time {
	select {
	case <-p.exited:
		return p.exitedAt
	default:
		return time.Time{}
	}
}

// Running reports whether the process has not ended.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process's group.
func (p *Process) Signal(sig syscall.Signal) { syscall.Kill(-p.cmd.Process.Pid, sig) }

// KilledBySIGKILL reports whether the process ended by SIGKILL (a
// failpoint's, or Kill's); false while it runs.
func (p *Process) KilledBySIGKILL() bool {
	if p.Running() {
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// State describes how the process ended (nil while it runs).
func (p *Process) State() *os.ProcessState {
	if p.Running() {
		return nil
	}
	return p.cmd.ProcessState
}

// Kill sends SIGKILL to the process group and waits for the end.
func (p *Process) Kill() {
	if p.Running() {
		p.Signal(syscall.SIGKILL)
	}
	<-p.exited
}

// Stop sends SIGTERM and waits up to bound for the end, then kills.
func (p *Process) Stop(bound time.Duration) {
	if !p.Running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(bound):
		p.Kill()
	}
}
