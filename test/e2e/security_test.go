package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/devcerts"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

func tlsClientConfig(t *testing.T, f devcerts.Files) *tls.Config {
	t.Helper()
	r, err := security.NewReloader(security.TLSFiles{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	return r.ClientConfig("")
}

func codeOf(err error) codes.Code {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return codes.OK
}

// mTLS on the client API and on the Raft transport: a client without a
// certificate, or with one from another CA, is refused; a cluster-CA client
// gets through; the Raft port does not talk to a peer without a valid cert.
func TestMutualTLSRequired(t *testing.T) {
	needDBs(t)
	dir := t.TempDir()
	ca, err := devcerts.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	nodeFiles, err := ca.WritePeer(filepath.Join(dir, "n1"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	appFiles, err := ca.WriteClient(filepath.Join(dir, "app"), "app")
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, _ := devcerts.NewCA("rogue CA")
	rogueFiles, err := rogueCA.WriteClient(filepath.Join(dir, "rogue"), "app")
	if err != nil {
		t.Fatal(err)
	}
	good := tlsClientConfig(t, appFiles)
	n := newNode(t, nodeOpts{
		extraYAML:  fmt.Sprintf("tls: {cert_file: %q, key_file: %q, ca_file: %q}\n", nodeFiles.Cert, nodeFiles.Key, nodeFiles.CA),
		healthDial: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(good))},
	})
	n.start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fast := client.WithRetryPolicy(client.RetryPolicy{Attempts: 1})

	plain, _ := client.Dial(ctx, n.addr, fast)
	defer plain.Close()
	if _, err := plain.GetTransaction(ctx, "0000000000000000beef"); err == nil {
		t.Fatal("a plaintext client got an answer from a TLS node")
	}
	noCert, _ := client.Dial(ctx, n.addr, fast, client.WithTLS(&tls.Config{RootCAs: good.RootCAs}))
	defer noCert.Close()
	if _, err := noCert.GetTransaction(ctx, "0000000000000000beef"); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	rogue, _ := client.Dial(ctx, n.addr, fast, client.WithTLS(tlsClientConfig(t, rogueFiles)))
	defer rogue.Close()
	if _, err := rogue.GetTransaction(ctx, "0000000000000000beef"); err == nil {
		t.Fatal("a client with another CA's certificate was served")
	}
	ok, _ := client.Dial(ctx, n.addr, client.WithTLS(good))
	defer ok.Close()
	if _, _, err := ok.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT 1"))); err != nil {
		t.Fatalf("cluster-CA client refused: %v", err)
	}

	// The Raft port: plaintext gets nothing back; another CA fails the handshake.
	raftAddr := raftBindOf(t, n)
	conn, err := net.DialTimeout("tcp", raftAddr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	conn.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0}) // a raft RPC type byte and junk
	buf := make([]byte, 16)
	if k, _ := conn.Read(buf); k > 0 && buf[0] != 0x15 { // 0x15: a TLS alert is the only acceptable answer
		t.Fatalf("raft port answered plaintext: % x", buf[:k])
	}
	conn.Close()
	if c, err := tls.Dial("tcp", raftAddr, tlsClientConfig(t, rogueFiles)); err == nil {
		err = c.Handshake()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, rerr := c.Read(buf)
		c.Close()
		if err == nil && rerr == nil {
			t.Fatal("raft port accepted a certificate from another CA")
		}
	}
	if c, err := tls.Dial("tcp", raftAddr, tlsClientConfig(t, nodeFiles)); err != nil {
		t.Fatalf("raft port refused a cluster certificate: %v", err)
	} else {
		c.Close()
	}
}

func raftBindOf(t *testing.T, n *node) string {
	t.Helper()
	b, err := os.ReadFile(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "bind: "); ok {
			return v
		}
	}
	t.Fatal("no raft.bind in config")
	return ""
}

// Tokens and per-client policy: who may call which service, on which
// participants, how often and how many at once; denials are audited; a
// planted password never shows in logs or API answers.
func TestAuthorizationLimitsAndSecrets(t *testing.T) {
	needDBs(t)
	dir := t.TempDir()
	const (
		appToken   = "app-token-0123456789abcdef"
		opsToken   = "ops-token-0123456789abcdef"
		slowToken  = "slow-token-0123456789abcdef"
		plantedPW  = "planted-secret-Zq7x9Lm2"
		badToken   = "not-a-valid-token-000000000"
		tokensFile = "tokens"
	)
	tokens := filepath.Join(dir, tokensFile)
	os.WriteFile(tokens, []byte(fmt.Sprintf("# client token\napp %s\nops %s\nslow %s\n", appToken, opsToken, slowToken)), 0o600)
	// The dev PostgreSQL trusts loopback, so a planted password is accepted and ignored.
	dsn := suite.DBs.PGDSN
	if u, ok := strings.CutPrefix(dsn, "postgres://txcoord@"); ok {
		dsn = "postgres://txcoord:" + plantedPW + "@" + u
	}
	n := newNode(t, nodeOpts{pgDSN: dsn, extraYAML: fmt.Sprintf(`auth:
  tokens_file: %q
  clients:
    - {name: app, coordinator: true, participants: [pg], max_active: 2}
    - {name: ops, admin: true, coordinator: true, participants: ["*"]}
    - {name: slow, coordinator: true, participants: ["*"], rate: 1, burst: 1}
`, tokens), healthDial: nil})
	n.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fast := client.WithRetryPolicy(client.RetryPolicy{Attempts: 1})
	dial := func(token string) *client.Client {
		opts := []client.Option{fast}
		if token != "" {
			opts = append(opts, client.WithToken(token, true))
		}
		c, err := client.Dial(ctx, n.addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	anon, bad, app, ops, slow := dial(""), dial(badToken), dial(appToken), dial(opsToken), dial(slowToken)

	if _, err := anon.Begin(ctx, client.TxOptions{}); codeOf(err) != codes.Unauthenticated {
		t.Errorf("no token: want Unauthenticated, got %v", err)
	}
	if _, err := bad.Begin(ctx, client.TxOptions{}); codeOf(err) != codes.Unauthenticated {
		t.Errorf("bad token: want Unauthenticated, got %v", err)
	}
	if _, _, err := app.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT 1"))); err != nil {
		t.Errorf("app on pg: %v", err)
	}
	_, _, err := app.Run(ctx, client.TxOptions{}, client.On("surreal", client.Read("e2e_kv", "x")))
	if codeOf(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "surreal") {
		t.Errorf("app on surreal: want PermissionDenied naming the participant, got %v", err)
	}
	if _, err := app.ClusterStatus(ctx); codeOf(err) != codes.PermissionDenied {
		t.Errorf("app on Admin: want PermissionDenied, got %v", err)
	}
	if _, err := ops.ClusterStatus(ctx); err != nil {
		t.Errorf("ops on Admin: %v", err)
	}
	// Per-client active limit (2), naming the limit.
	t1, err1 := app.Begin(ctx, client.TxOptions{})
	t2, err2 := app.Begin(ctx, client.TxOptions{})
	if err1 != nil || err2 != nil {
		t.Fatalf("begin: %v %v", err1, err2)
	}
	if _, err := app.Begin(ctx, client.TxOptions{}); codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_active") {
		t.Errorf("third active transaction: want ResourceExhausted naming max_active, got %v", err)
	}
	t1.Rollback(ctx)
	t2.Rollback(ctx)
	if _, err := ops.Begin(ctx, client.TxOptions{}); err != nil {
		t.Errorf("another client is not limited by app's max_active: %v", err)
	}
	// Rate limit (1/s, burst 1), naming the limit.
	slow.GetTransaction(ctx, "0000000000000000beef")
	if _, err := slow.GetTransaction(ctx, "0000000000000000beef"); codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "rate") {
		t.Errorf("over the rate: want ResourceExhausted naming the rate, got %v", err)
	}
	// Denials are in the audit trail.
	var audit string
	eventually(t, 10*time.Second, "denials audited", func() bool {
		resp, err := ops.ListAudit(ctx, &pb.ListAuditRequest{Kind: "operator"})
		if err != nil {
			return false
		}
		audit = fmt.Sprint(resp.Entries)
		return resp.Verified && strings.Contains(audit, "AUTHZ_DENIED") && strings.Contains(audit, "participant \\\"surreal\\\"")
	})
	// Secrets: never in the log, never in API answers.
	st, _ := ops.ClusterStatus(ctx)
	for what, text := range map[string]string{"log": n.log(), "audit": audit, "cluster status": fmt.Sprint(st)} {
		for _, secret := range []string{plantedPW, appToken, opsToken, badToken, slowToken} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret appears in the %s", what)
			}
		}
	}
}

// Server and client identities are distinct: on the gRPC API a node
// (peer) certificate presented as a client certificate is refused, and so is
// a client certificate claiming a node's identity; on the Raft transport a
// client certificate of the same CA is refused while a node certificate is
// accepted.
func TestServerAndClientIdentitiesDistinct(t *testing.T) {
	needDBs(t)
	dir := t.TempDir()
	ca, err := devcerts.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := ca.WritePeer(filepath.Join(dir, "n1"), "n1")
	n2, _ := ca.WritePeer(filepath.Join(dir, "n2"), "n2")
	app, _ := ca.WriteClient(filepath.Join(dir, "app"), "app")
	fakeNode, _ := ca.WriteClient(filepath.Join(dir, "fake"), "n1") // a client certificate named like the node
	good := tlsClientConfig(t, app)
	n := newNode(t, nodeOpts{
		extraYAML:  fmt.Sprintf("tls: {cert_file: %q, key_file: %q, ca_file: %q}\n", n1.Cert, n1.Key, n1.CA),
		healthDial: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(good))},
	})
	n.start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fast := client.WithRetryPolicy(client.RetryPolicy{Attempts: 1})
	for name, f := range map[string]devcerts.Files{"another node's certificate (n2)": n2, "the node's own certificate": n1, "a client certificate named n1": fakeNode} {
		c, _ := client.Dial(ctx, n.addr, fast, client.WithTLS(tlsClientConfig(t, f)))
		if _, err := c.GetTransaction(ctx, "0000000000000000beef"); err == nil || codeOf(err) == codes.NotFound {
			t.Errorf("%s was served as a client of the gRPC API (%v)", name, err)
		} else {
			t.Logf("%s refused: %v", name, err)
		}
		c.Close()
	}
	ok, _ := client.Dial(ctx, n.addr, client.WithTLS(good))
	defer ok.Close()
	if _, _, err := ok.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT 1"))); err != nil {
		t.Fatalf("client certificate refused: %v", err)
	}

	// The Raft port: a client certificate fails the handshake; a node's passes.
	raftAddr := raftBindOf(t, n)
	handshake := func(f devcerts.Files) error {
		c, err := tls.Dial("tcp", raftAddr, tlsClientConfig(t, f))
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// after the client's handshake completes; a read surfaces it.
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // accepted: raft simply waits for our RPC
		}
		return err
	}
	if err := handshake(app); err == nil {
		t.Error("the Raft transport accepted a client certificate")
	} else {
		t.Logf("client certificate refused on the Raft transport: %v", err)
	}
	if err := handshake(n2); err != nil {
		t.Errorf("the Raft transport refused a node certificate: %v", err)
	}
}
