package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Databases is the run's own PostgreSQL and SurrealDB, started through the
// project's scripts (scripts/pg.sh, scripts/surreal.sh) with a data
// directory and ports of their own, so that the run can crash and restart
// them without disturbing the shared development databases.
type Databases struct {
	Repo        string // repository root (holds scripts/)
	DataDir     string // TXCOORD_DATA_DIR for the scripts: pg/ and surreal/ go under it
	PGPort      int
	SurrealPort int
	Log         io.Writer // script output

	pgData string // PGDATA, learnt from `pg.sh status`
}

const pgBin = "/usr/lib/postgresql/15/bin"

func (d *Databases) env() []string {
	return append(os.Environ(),
		"TXCOORD_DATA_DIR="+d.DataDir,
		"TXCOORD_PG_PORT="+strconv.Itoa(d.PGPort),
		"TXCOORD_SURREAL_PORT="+strconv.Itoa(d.SurrealPort),
	)
}

// script runs scripts/<name> <arg> and returns its combined output.
func (d *Databases) script(ctx context.Context, name, arg string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(d.Repo, "scripts", name), arg)
	cmd.Env = d.env()
	var out bytes.Buffer
	w := io.Writer(&out)
	if d.Log != nil {
		w = io.MultiWriter(&out, d.Log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("scripts/%s %s: %w\n%s", name, arg, err, tail(out.String(), 15))
	}
	return out.String(), nil
}

// Up starts both databases (idempotent) and waits until they serve.
func (d *Databases) Up(ctx context.Context) error {
	if err := d.PGStart(ctx); err != nil {
		return err
	}
	return d.SurrealStart(ctx)
}

// Down stops both (PostgreSQL fast shutdown, SurrealDB SIGTERM).
func (d *Databases) Down(ctx context.Context) error {
	_, err1 := d.script(ctx, "pg.sh", "down")
	_, err2 := d.script(ctx, "surreal.sh", "down")
	if err1 != nil {
		return err1
	}
	return err2
}

var pgDataRE = regexp.MustCompile(`data (\S+)`)

// PGStart starts PostgreSQL (and learns its data directory).
func (d *Databases) PGStart(ctx context.Context) error {
	if _, err := d.script(ctx, "pg.sh", "up"); err != nil {
		return err
	}
	out, err := d.script(ctx, "pg.sh", "status")
	if err != nil {
		return err
	}
	m := pgDataRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("pg.sh status did not name the data directory: %q", out)
	}
	d.pgData = strings.TrimSuffix(m[1], ",")
	return nil
}

// PGCrash stops PostgreSQL in immediate mode: no checkpoint, crash recovery
// at the next start, every connection dropped. It runs pg_ctl as the
// cluster's OS user, as scripts/pg.sh does (txcoord when we are root).
func (d *Databases) PGCrash(ctx context.Context) error {
	if d.pgData == "" {
		return fmt.Errorf("PostgreSQL data directory unknown: start it with PGStart first")
	}
	args := []string{filepath.Join(pgBin, "pg_ctl"), "-D", d.pgData, "-m", "immediate", "-w", "-t", "30", "stop"}
	if os.Geteuid() == 0 {
		args = append([]string{"runuser", "-u", "txcoord", "--"}, args...)
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop -m immediate: %w: %s", err, out)
	}
	return nil
}

// SurrealStart starts the SurrealDB server and waits until it is healthy.
func (d *Databases) SurrealStart(ctx context.Context) error {
	_, err := d.script(ctx, "surreal.sh", "up")
	return err
}

// SurrealKill SIGKILLs the SurrealDB server (a crash: no clean close of the
// engine) and waits until it is gone.
func (d *Databases) SurrealKill() error {
	pidFile := filepath.Join(d.DataDir, "surreal", "server.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("surreal pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("surreal pid file %s: %q", pidFile, b)
	}
	// Guard against a recycled pid, as scripts/surreal.sh does.
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmdline, []byte("server.js")) {
		return fmt.Errorf("pid %d is not the SurrealDB server (%q)", pid, cmdline)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill surreal pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("surreal pid %d still alive 10s after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// PGDSN is the DSN of one of the cluster's databases (txcoord_a, txcoord_b)
// on the given port (the real one, or a proxy's).
func PGDSN(addr, database string) string {
	return fmt.Sprintf("postgres://txcoord@%s/%s?sslmode=disable", addr, database)
}

// PGAddr is PostgreSQL's real address.
func (d *Databases) PGAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.PGPort) }

// SurrealAddr is SurrealDB's real address.
func (d *Databases) SurrealAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.SurrealPort) }

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
