package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/txctl"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
)

// rewrite replaces old with new in the node's configuration file.
func (n *node) rewrite(old, new string) {
	n.t.Helper()
	b, err := os.ReadFile(n.cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		n.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(n.cfg, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func operatorAudit(t *testing.T, ctx context.Context, c *client.Client) []*pb.AuditEntry {
	t.Helper()
	resp, err := c.ListAudit(ctx, &pb.ListAuditRequest{Kind: "operator"})
	if err != nil {
		t.Fatalf("list audit: %v", err)
	}
	if !resp.Verified {
		t.Fatalf("audit chain does not verify: %+v", resp)
	}
	return resp.Entries
}

func lastAudit(entries []*pb.AuditEntry, action string) *pb.AuditEntry {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Action == action {
			return entries[i]
		}
	}
	return nil
}

// TestConfigReload: a running node (real process) reloads its tokens file,
// client policies, limits and log level on SIGHUP and on the ReloadConfig
// RPC (through txctl reload); a reload that does not validate is refused
// with the reason and the old configuration keeps working; every reload,
// applied or refused, is an audit entry naming what changed with a digest,
// and no token ever appears in the trail, the RPC answers or the log.
func TestConfigReload(t *testing.T) {
	needDBs(t)
	dir := t.TempDir()
	const (
		appToken  = "app-token-aaaaaaaaaaaaaaaa"
		opsToken  = "ops-token-bbbbbbbbbbbbbbbb"
		lateToken = "late-token-cccccccccccccccc"
	)
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("app "+appToken+"\nops "+opsToken+"\n"), 0o600)
	maddr := freePort(t)
	n := newNode(t, nodeOpts{coordinatorYAML: "  max_statements: 3\n", extraYAML: fmt.Sprintf(`metrics_listen: %s
auth:
  tokens_file: %q
  clients:
    - {name: app, coordinator: true, participants: [pg], max_active: 1}
    - {name: ops, admin: true, coordinator: true, participants: ["*"]}
`, maddr, tokens)})
	n.start()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fast := client.WithRetryPolicy(client.RetryPolicy{Attempts: 1})
	dial := func(token string) *client.Client {
		c, err := client.Dial(ctx, n.addr, fast, client.WithToken(token, true))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	app, ops, late := dial(appToken), dial(opsToken), dial(lateToken)

	// Before: app may hold one transaction; the late token is unknown.
	t1, err := app.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Begin(ctx, client.TxOptions{}); codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_active") {
		t.Fatalf("second transaction of app before reload: %v", err)
	}
	t1.Rollback(ctx)
	if _, err := late.Begin(ctx, client.TxOptions{}); codeOf(err) != codes.Unauthenticated {
		t.Fatalf("late token before reload: %v", err)
	}
	stmts := func(k int) []client.Step {
		var s []client.Step
		for i := 0; i < k; i++ {
			s = append(s, client.On("pg", client.SQL("SELECT 1")))
		}
		return s
	}
	if _, _, err := ops.Run(ctx, client.TxOptions{}, stmts(4)...); codeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_statements") {
		t.Fatalf("4 statements before reload: %v", err)
	}

	// Edit the files and send SIGHUP.
	os.WriteFile(tokens, []byte("app "+appToken+"\nops "+opsToken+"\nlate "+lateToken+"\n"), 0o600)
	n.rewrite("participants: [pg], max_active: 1}", "participants: [pg], max_active: 2}\n    - {name: late, coordinator: true, participants: [pg]}")
	n.rewrite("  max_statements: 3\n", "  max_statements: 5\n")
	n.rewrite("node_id: n1\n", "node_id: n1\nlog_level: debug\n")
	if err := syscall.Kill(n.proc.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var reload *pb.AuditEntry
	eventually(t, 20*time.Second, "CONFIG_RELOAD audited", func() bool {
		reload = lastAudit(operatorAudit(t, ctx, ops), "CONFIG_RELOAD")
		return reload != nil
	})
	if want := "changed: auth.clients[app], auth.clients[late], auth.tokens_file, coordinator.max_statements, log_level; digest sha256:"; !strings.HasPrefix(reload.Detail, want) || reload.Actor != "SIGHUP" {
		t.Errorf("reload entry: actor %q detail %q; want actor SIGHUP, detail starting %q", reload.Actor, reload.Detail, want)
	}
	// After: two transactions for app, the late token works, 5 statements pass.
	a1, err1 := app.Begin(ctx, client.TxOptions{})
	a2, err2 := app.Begin(ctx, client.TxOptions{})
	if err1 != nil || err2 != nil {
		t.Fatalf("app's max_active 2 after reload: %v %v", err1, err2)
	}
	a1.Rollback(ctx)
	a2.Rollback(ctx)
	if _, _, err := late.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT 1"))); err != nil {
		t.Errorf("late token after reload: %v", err)
	}
	if _, _, err := ops.Run(ctx, client.TxOptions{}, stmts(5)...); err != nil {
		t.Errorf("5 statements after reload: %v", err)
	}
	eventually(t, 10*time.Second, "debug lines after the log level reload", func() bool {
		return strings.Contains(n.log(), "level=DEBUG")
	})

	// A configuration that does not validate is refused by txctl reload
	// (the RPC), with the reason; the old one stays.
	n.rewrite("  max_statements: 5\n", "  max_statements: 5\n  default_timeout: 1h\n  max_timeout: 1m\n")
	var out, errb bytes.Buffer
	code := txctl.Main(ctx, []string{"reload", "--addr", n.addr, "--token", opsToken}, txctl.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	if code != txctl.ExitRefused || !strings.Contains(errb.String(), "default_timeout (1h0m0s) must not exceed max_timeout (1m0s)") {
		t.Errorf("txctl reload of an invalid config: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	refused := lastAudit(operatorAudit(t, ctx, ops), "CONFIG_RELOAD_REFUSED")
	if refused == nil || !strings.Contains(refused.Detail, "the old configuration stays") || !strings.Contains(refused.Detail, "max_timeout") {
		t.Errorf("refusal not audited with its reason: %+v", refused)
	}
	if _, err := app.Begin(ctx, client.TxOptions{Timeout: 5 * time.Minute}); codeOf(err) != codes.OK {
		t.Errorf("old max_timeout (10m default) must still be in force: %v", err)
	}

	// A tokens file with a bad line is refused too, and the late token keeps working.
	n.rewrite("  default_timeout: 1h\n  max_timeout: 1m\n", "")
	os.WriteFile(tokens, []byte("app "+appToken+"\nops "+opsToken+"\nlate short\n"), 0o600)
	if _, err := ops.ReloadConfig(ctx); codeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "tokens_file line 3") {
		t.Errorf("bad tokens file: want FailedPrecondition naming the line, got %v", err)
	}
	if _, _, err := late.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT 1"))); err != nil {
		t.Errorf("late token after a refused reload: %v", err)
	}
	// A valid reload through the RPC returns what changed (nothing: the
	// tokens file is restored) and the digest.
	os.WriteFile(tokens, []byte("app "+appToken+"\nops "+opsToken+"\nlate "+lateToken+"\n"), 0o600)
	resp, err := ops.ReloadConfig(ctx)
	if err != nil || len(resp.Changed) != 0 || len(resp.Digest) != 64 {
		t.Errorf("no-op reload: %+v %v", resp, err)
	}

	// Reloads are counted by result, scraped over HTTP: SIGHUP and the
	// last RPC applied, the two refusals refused.
	_, body := scrape(t, "http://"+maddr+"/metrics")
	for _, want := range []string{`txcoord_config_reloads_total{result="applied"} 2`, `txcoord_config_reloads_total{result="refused"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Secrets: never in the trail, the answers or the log.
	entries := operatorAudit(t, ctx, ops)
	text := fmt.Sprint(entries) + fmt.Sprint(resp) + n.log()
	for _, secret := range []string{appToken, opsToken, lateToken} {
		if strings.Contains(text, secret) {
			t.Errorf("token %s… appears in the audit trail, an answer or the log", secret[:8])
		}
	}
}
