package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/txcoord/txcoord/internal/devcerts"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// backend answers with fixed data whose every value is marked, so a test
// can tell whether any of it leaked. The browser tests (test/console) run
// the console against real nodes; these check the access rules alone.
type backend struct{ recovered int }

const secret = "n1-SECRET-DATA"

func (b *backend) ClusterStatus(context.Context, *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	return &pb.ClusterStatusResponse{NodeId: secret, State: "Leader", LeaderId: secret, Term: 7,
		Members: []*pb.Member{{Id: secret, GrpcAddress: "self", Role: "LEADER", Suffrage: "VOTER"}}, Ready: true}, nil
}
func (b *backend) ListTransactions(context.Context, *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	return &pb.ListTransactionsResponse{Transactions: []*pb.Transaction{{Txid: secret}}}, nil
}
func (b *backend) GetTransaction(context.Context, *pb.GetTransactionRequest) (*pb.Transaction, error) {
	return &pb.Transaction{Txid: secret}, nil
}
func (b *backend) InDoubt(context.Context, *pb.InDoubtRequest) (*pb.InDoubtResponse, error) {
	return &pb.InDoubtResponse{Branches: []*pb.InDoubtBranch{{Participant: "pg", Txid: secret, Ours: true, Action: pb.PlannedAction_WILL_COMMIT}}}, nil
}
func (b *backend) Recover(_ context.Context, r *pb.RecoverRequest) (*pb.RecoverResponse, error) {
	if !r.DryRun {
		b.recovered++
	}
	return &pb.RecoverResponse{DryRun: r.DryRun, Actions: []*pb.RecoveryAction{{Participant: "pg", Txid: secret, Gid: "g", Action: pb.PlannedAction_WILL_COMMIT}}}, nil
}
func (b *backend) ListAudit(context.Context, *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	return &pb.ListAuditResponse{Verified: true, Entries: []*pb.AuditEntry{{Seq: 1, Actor: secret, Action: "RECOVER"}}}, nil
}

func newTestServer(t *testing.T, withAuth bool) (*Server, *backend, *[]string) {
	t.Helper()
	var policy *security.Policy
	if withAuth {
		tokens := filepath.Join(t.TempDir(), "tokens")
		os.WriteFile(tokens, []byte("ops ops-token-0123456789\napp app-token-0123456789\n"), 0o600)
		var err error
		policy, err = security.LoadPolicy(security.AuthConfig{TokensFile: tokens, Clients: []security.ClientPolicy{
			{Name: "ops", Admin: true}, {Name: "app", Coordinator: true}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	b := &backend{}
	var denied []string
	s, err := New(Config{NodeID: secret, Policy: policy, Backend: b, SessionTTL: time.Hour, Figures: prometheus.NewRegistry(),
		AskMember: func(ctx context.Context, addr, bearer string) (*pb.ClusterStatusResponse, error) {
			return b.ClusterStatus(ctx, nil)
		},
		OnDenied: func(id, method, reason string) { denied = append(denied, id+" "+method) }}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, b, &denied
}

func get(t *testing.T, h http.Handler, path string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func post(t *testing.T, h http.Handler, path string, form url.Values, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var dataPaths = []string{"/cluster", "/transactions", "/in-doubt", "/audit", "/charts", "/transactions/x", "/in-doubt/apply",
	"/fragment/cluster", "/fragment/transactions", "/fragment/in-doubt", "/fragment/audit", "/fragment/charts",
	"/api/cluster", "/api/transactions", "/api/in-doubt", "/api/audit", "/api/charts", "/api/transactions/x"}

func TestNoDataWithoutSignIn(t *testing.T) {
	s, b, _ := newTestServer(t, true)
	h := s.Handler()
	for _, p := range dataPaths {
		w := get(t, h, p)
		if w.Code != http.StatusUnauthorized || strings.Contains(w.Body.String(), secret) {
			t.Errorf("GET %s: status %d (want 401), leaks data: %v", p, w.Code, strings.Contains(w.Body.String(), secret))
		}
	}
	if w := post(t, h, "/in-doubt/apply", url.Values{"confirm": {"yes"}}); w.Code != http.StatusUnauthorized || b.recovered != 0 {
		t.Errorf("POST apply without sign-in: status %d, recovered %d", w.Code, b.recovered)
	}
	// A client without admin: refused at sign-in, audited, no session.
	w := post(t, h, "/login", url.Values{"token": {"app-token-0123456789"}})
	if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 || !strings.Contains(w.Body.String(), "admin: true") {
		t.Errorf("sign-in as app: status %d, cookies %v", w.Code, w.Result().Cookies())
	}
}

func TestSessionAndCSRF(t *testing.T) {
	s, b, denied := newTestServer(t, true)
	h := s.Handler()
	w := post(t, h, "/login", url.Values{"token": {"ops-token-0123456789"}, "next": {"//evil.example/x"}})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/cluster" {
		t.Fatalf("sign-in: status %d, location %q (an off-site next must not be followed)", w.Code, w.Header().Get("Location"))
	}
	cookie := w.Result().Cookies()[0]
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Name != sessionCookie {
		t.Fatalf("session cookie: %+v", cookie)
	}
	for _, p := range dataPaths {
		w := get(t, h, p, cookie)
		if w.Code != http.StatusOK || !strings.Contains(p, "charts") && !strings.Contains(w.Body.String(), secret) {
			t.Errorf("GET %s signed in: status %d", p, w.Code)
		}
	}
	// Apply needs the session's CSRF token and the confirmation.
	ss := s.sessions.get(cookie.Value)
	plan := planFingerprint(&pb.RecoverResponse{Actions: []*pb.RecoveryAction{{Participant: "pg", Gid: "g", Action: pb.PlannedAction_WILL_COMMIT}}})
	if w := post(t, h, "/in-doubt/apply", url.Values{"confirm": {"yes"}, "plan": {plan}, "csrf": {"wrong"}}, cookie); w.Code != http.StatusForbidden || b.recovered != 0 {
		t.Errorf("apply with a wrong CSRF token: status %d, recovered %d", w.Code, b.recovered)
	}
	if w := post(t, h, "/in-doubt/apply", url.Values{"plan": {plan}, "csrf": {ss.csrf}}, cookie); w.Code != http.StatusUnprocessableEntity || b.recovered != 0 {
		t.Errorf("apply unconfirmed: status %d, recovered %d", w.Code, b.recovered)
	}
	if w := post(t, h, "/in-doubt/apply", url.Values{"confirm": {"yes"}, "plan": {"other"}, "csrf": {ss.csrf}}, cookie); w.Code != http.StatusConflict || b.recovered != 0 {
		t.Errorf("apply of another plan: status %d, recovered %d", w.Code, b.recovered)
	}
	if w := post(t, h, "/in-doubt/apply", url.Values{"confirm": {"yes"}, "plan": {plan}, "csrf": {ss.csrf}}, cookie); w.Code != http.StatusOK || b.recovered != 1 ||
		!strings.Contains(w.Body.String(), "Recovery pass applied") {
		t.Errorf("apply: status %d, recovered %d", w.Code, b.recovered)
	}
	if len(*denied) == 0 {
		t.Error("a refused apply must be reported to OnDenied")
	}
	// Expiry: the session ends, and with it every answer.
	s.sessions.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if w := get(t, h, "/api/cluster", cookie); w.Code != http.StatusUnauthorized {
		t.Errorf("expired session: status %d", w.Code)
	}
}

func TestOpenConsoleSaysSo(t *testing.T) {
	s, _, _ := newTestServer(t, false)
	w := get(t, s.Handler(), "/cluster")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "No access control") {
		t.Fatalf("open console: status %d, banner missing", w.Code)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP: %q", csp)
	}
}

func TestQuantileAndChart(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004, 0.008}
	cum := []float64{0, 50, 90, 100} // 50 in (1,2] ms, 40 in (2,4], 10 in (4,8]
	if q := quantile(0.5, bounds, cum, 100); math.Abs(q-0.002) > 1e-9 {
		t.Errorf("p50 = %v, want 0.002", q)
	}
	if q := quantile(0.99, bounds, cum, 100); q <= 0.004 || q > 0.008 {
		t.Errorf("p99 = %v, want in (0.004, 0.008]", q)
	}
	c := drawChart("x", "T <b>", "ms", []series{{Name: "a", Class: "s1", Vals: []float64{1, 2, math.NaN(), 3}}}, 60)
	svg := string(c.SVG)
	if strings.Count(svg, "<polyline") != 1 || strings.Count(svg, "<circle") != 1 || strings.Contains(svg, "<b>") {
		t.Errorf("chart: want one line, one dot, escaped title:\n%s", svg)
	}
	if !strings.Contains(c.Summary, "a: 3.00 ms") {
		t.Errorf("summary: %q", c.Summary)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/in-doubt": "/in-doubt", "": "/cluster", "https://evil.example/": "/cluster",
		"//evil.example": "/cluster", "/\\evil.example": "/cluster", "/transactions?state=ACTIVE": "/transactions?state=ACTIVE"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestListenCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s, _, _ := newTestServer(t, false)
	s.cfg.Listen = "127.0.0.1:0"
	ls, err := Listen(s.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ls.URL() + "cluster")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Under TLS: HTTPS with the node's certificates; a client certificate of
// the CA identifies the client (admin or not), a browser without one may
// still sign in with a token, and a plain-HTTP request is not answered.
func TestTLSClientCertificateAndToken(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcerts.NewCA("console test CA")
	if err != nil {
		t.Fatal(err)
	}
	nodeF, _ := ca.WritePeer(filepath.Join(dir, "n1"), "n1")
	opsF, _ := ca.WriteClient(filepath.Join(dir, "ops"), "ops")
	appF, _ := ca.WriteClient(filepath.Join(dir, "app"), "app")
	srvTLS, err := security.NewReloader(security.TLSFiles{CertFile: nodeF.Cert, KeyFile: nodeF.Key, CAFile: nodeF.CA})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := newTestServer(t, true)
	cfg := s.cfg
	cfg.Listen, cfg.TLS = "127.0.0.1:0", srvTLS.ServerConfigOptionalClientCert()
	ls, err := Listen(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if !strings.HasPrefix(ls.URL(), "https://") {
		t.Fatalf("URL %s: want https", ls.URL())
	}
	clientFor := func(f *devcerts.Files) *http.Client {
		r, err := security.NewReloader(security.TLSFiles{CertFile: nodeF.Cert, KeyFile: nodeF.Key, CAFile: nodeF.CA})
		if f != nil {
			r, err = security.NewReloader(security.TLSFiles{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA})
		}
		if err != nil {
			t.Fatal(err)
		}
		tc := r.ClientConfig("")
		if f == nil {
			tc.GetClientCertificate = nil // a browser without a certificate
		}
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	status := func(c *http.Client, path string) int {
		t.Helper()
		resp, err := c.Get(ls.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK && strings.Contains(string(body), secret) {
			t.Errorf("GET %s refused with data in the body", path)
		}
		return resp.StatusCode
	}
	if got := status(clientFor(&opsF), "api/cluster"); got != http.StatusOK {
		t.Errorf("ops certificate: status %d, want 200", got)
	}
	if got := status(clientFor(&appF), "api/cluster"); got != http.StatusForbidden {
		t.Errorf("app certificate (no admin): status %d, want 403", got)
	}
	anon := clientFor(nil)
	if got := status(anon, "api/cluster"); got != http.StatusUnauthorized {
		t.Errorf("no certificate: status %d, want 401", got)
	}
	resp, err := anon.PostForm(ls.URL()+"login", url.Values{"token": {"ops-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := status(anon, "api/cluster"); got != http.StatusOK {
		t.Errorf("no certificate, signed in with a token: status %d, want 200", got)
	}
	u, _ := url.Parse(ls.URL())
	for _, c := range anon.Jar.Cookies(u) {
		if strings.HasPrefix(c.Name, sessionCookie) && c.Value == "" {
			t.Error("empty session cookie")
		}
	}
	if resp, err := http.Get("http://" + u.Host + "/api/cluster"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), secret) {
			t.Error("plain HTTP got data from the HTTPS console")
		}
	}
}

func TestPhasesOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(ms int, name string) *pb.TransactionEvent {
		return &pb.TransactionEvent{At: timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond)), Event: name}
	}
	ps := phasesOf([]*pb.TransactionEvent{ev(0, "BEGIN"), ev(10, "BRANCH_OPENED"), ev(30, "COMMIT_REQUESTED"), ev(40, "VOTE"),
		ev(70, "DECISION"), ev(80, "COMMITTED"), ev(95, "COMMITTED")})
	want := []phase{{"active (statements)", 0, 30 * time.Millisecond, "p-active"}, {"prepare and decision", 30 * time.Millisecond, 40 * time.Millisecond, "p-prepare"},
		{"phase two", 70 * time.Millisecond, 25 * time.Millisecond, "p-two"}}
	if fmt.Sprint(ps) != fmt.Sprint(want) {
		t.Errorf("committed: got %v, want %v", ps, want)
	}
	ps = phasesOf([]*pb.TransactionEvent{ev(0, "BEGIN"), ev(5, "ABORT"), ev(9, "ROLLED_BACK")})
	if len(ps) != 2 || ps[0].Name != "active, aborted" || ps[1].Name != "phase two" || ps[1].Dur != 4*time.Millisecond {
		t.Errorf("aborted while active: %v", ps)
	}
	if !strings.Contains(string(drawPhases(ps)), "<rect") || drawPhases(nil) != "" {
		t.Error("drawPhases")
	}
}

// The sampler turns the registry's counters into per-second rates and
// commit-latency percentiles, including the second in which the latency
// histogram first appears.
func TestFiguresSampler(t *testing.T) {
	reg := prometheus.NewRegistry()
	tx := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "txcoord_transactions_total"}, []string{"outcome"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "txcoord_commit_seconds", Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16)}, []string{"outcome"})
	reg.MustRegister(tx, lat)
	f := newFigures(reg)
	t0 := time.Now()
	f.tick(t0)
	for range 10 {
		tx.WithLabelValues("committed").Inc()
		lat.WithLabelValues("committed").Observe(0.003)
	}
	tx.WithLabelValues("aborted").Inc()
	f.tick(t0.Add(time.Second))
	ss := f.samples()
	if len(ss) != 1 || ss[0].Committed != 10 || ss[0].Aborted != 1 {
		t.Fatalf("samples: %+v", ss)
	}
	if ss[0].P50 < 2 || ss[0].P50 > 4.1 || math.IsNaN(ss[0].P99) {
		t.Errorf("p50 %v ms of 3 ms commits (bucket 2-4 ms), p99 %v", ss[0].P50, ss[0].P99)
	}
	f.tick(t0.Add(2 * time.Second))
	if ss := f.samples(); len(ss) != 2 || ss[1].Committed != 0 || !math.IsNaN(ss[1].P50) {
		t.Errorf("a second without commits: %+v", ss[1])
	}
}

// A config reload that takes admin away from a client ends its console
// session at the next request: every request is authorized against the
// policy in force (Config.CurrentPolicy), not the one at start.
func TestReloadedPolicyAppliesToSessions(t *testing.T) {
	s, _, _ := newTestServer(t, true)
	current := s.cfg.Policy
	s.cfg.CurrentPolicy = func() *security.Policy { return current }
	h := s.Handler()
	w := post(t, h, "/login", url.Values{"token": {"ops-token-0123456789"}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("sign-in: status %d", w.Code)
	}
	cookie := w.Result().Cookies()[0]
	if w := get(t, h, "/cluster", cookie); w.Code != http.StatusOK {
		t.Fatalf("GET /cluster signed in: status %d", w.Code)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("ops ops-token-0123456789\n"), 0o600)
	reloaded, err := security.LoadPolicy(security.AuthConfig{TokensFile: tokens, Clients: []security.ClientPolicy{{Name: "ops", Coordinator: true}}})
	if err != nil {
		t.Fatal(err)
	}
	current = reloaded
	if w := get(t, h, "/cluster", cookie); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), secret) {
		t.Fatalf("GET /cluster after ops lost admin: status %d (want 403 without data)", w.Code)
	}
}
