// Package console is txcoord's web console: server-rendered pages (Go
// html/template, assets embedded in the binary, no external requests) that
// show the cluster, transactions, in-doubt branches with the recovery plan,
// the audit trail and live charts, and apply a reviewed recovery plan.
//
// The console runs inside a node and calls that node's own gRPC services
// in-process (Backend), so it shows exactly what txctl shows and audits what
// txctl audits. Access control is the Admin API's (auth.go): a client whose
// policy allows the Admin service, identified by a client certificate or a
// bearer token exchanged for a session cookie; without auth it is open, on
// loopback only. It has few exported types: Config, Backend and Server.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"golang.org/x/time/rate"
)

//go:embed assets
var assets embed.FS

// Backend is what the console reads and does: the node's own Admin and
// Coordinator services, called in-process (their errors are gRPC statuses).
type Backend interface {
	ClusterStatus(context.Context, *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error)
	ListTransactions(context.Context, *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error)
	GetTransaction(context.Context, *pb.GetTransactionRequest) (*pb.Transaction, error)
	InDoubt(context.Context, *pb.InDoubtRequest) (*pb.InDoubtResponse, error)
	Recover(context.Context, *pb.RecoverRequest) (*pb.RecoverResponse, error)
	ListAudit(context.Context, *pb.ListAuditRequest) (*pb.ListAuditResponse, error)
}

// Config configures a console.
type Config struct {
	// NodeID names the node in every page's header.
	NodeID string
	// Listen is the HTTP(S) address (the node keeps it on loopback without TLS).
	Listen string
	// TLS, when set, serves HTTPS; it should verify a client certificate
	// when one is given (security.Reloader.ServerConfigOptionalClientCert).
	TLS *tls.Config
	// Policy is the node's access control; nil means none (open console,
	// which the node allows on loopback only).
	Policy *security.Policy
	// CurrentPolicy, when set, returns the policy in force now (the node's
	// config reload replaces it); Policy then only says whether access
	// control is on, which a reload cannot change. Every request is
	// authorized against the current policy, so a client removed or
	// stripped of admin by a reload loses its session at its next request.
	CurrentPolicy func() *security.Policy
	// OnDenied is told about every refused sign-in or request (the node
	// writes them to the audit trail, bounded, as for gRPC denials).
	OnDenied func(identity, method, reason string)
	// SessionTTL is how long a signed-in browser stays signed in.
	SessionTTL time.Duration
	Backend    Backend
	// AskMember asks another member (by gRPC address) for its own view of
	// the cluster; bearer is the signed-in client's token ("" if none).
	AskMember func(ctx context.Context, addr, bearer string) (*pb.ClusterStatusResponse, error)
	// Figures is the node's metrics registry, sampled every second for the
	// charts (nil: no charts).
	Figures prometheus.Gatherer
}

// Limits.
const (
	// maxSessions bounds signed-in browsers kept in memory; the oldest is
	// dropped beyond it.
	maxSessions = 1024
	// callTimeout bounds one backend call made for a page; applyTimeout
	// the recovery pass that Apply runs (the HTTP write timeout is above it).
	callTimeout  = 15 * time.Second
	applyTimeout = 2 * time.Minute
	// maxFormBytes bounds a posted form (sign-in, apply).
	maxFormBytes = 16 << 10
)

// Server is a running console. Safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	pages    map[string]*template.Template
	static   http.Handler
	sessions *sessions
	cookie   string // the session cookie's name
	logins   *rate.Limiter
	figures  *figures
	srv      *http.Server
	lis      net.Listener
	wg       sync.WaitGroup
	stop     chan struct{}
}

// New prepares a console without listening (tests use Handler).
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("console: Config.Backend is nil")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = time.Hour
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger.With("component", "console"), pages: pages,
		static:   http.StripPrefix("/static/", http.FileServer(http.FS(static))),
		sessions: newSessions(cfg.SessionTTL, maxSessions), cookie: sessionCookie, logins: rate.NewLimiter(loginRate, loginBurst), figures: newFigures(cfg.Figures), stop: make(chan struct{})}
	return s, nil
}

// Listen binds cfg.Listen and serves until Close; the figures sampler runs
// meanwhile.
func Listen(cfg Config, logger *slog.Logger) (*Server, error) {
	s, err := New(cfg, logger)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("console.listen %s: %w (is another process using the port? set console.listen)", cfg.Listen, err)
	}
	if cfg.TLS != nil {
		lis = tls.NewListener(lis, cfg.TLS)
	}
	s.lis = lis
	if _, port, err := net.SplitHostPort(lis.Addr().String()); err == nil {
		s.cookie = sessionCookie + "_" + port
	}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: applyTimeout + 30*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("console server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.figures.run(s.stop)
	}()
	return s, nil
}

// URL is where the console answers.
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + s.lis.Addr().String() + "/"
}

// Close stops serving and sampling.
func (s *Server) Close() error {
	close(s.stop)
	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = s.srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
	return err
}

// Handler serves every route; each one but /static/ and /login checks
// access first.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", s.static)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.guard(s.logout))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/cluster", http.StatusSeeOther) })
	for _, p := range livePages {
		mux.HandleFunc("GET /"+p.name, s.guard(s.page(p)))
		mux.HandleFunc("GET /fragment/"+p.name, s.guard(s.fragment(p)))
		mux.HandleFunc("GET /api/"+p.name, s.guard(s.api(p)))
	}
	mux.HandleFunc("GET /transactions/{txid}", s.guard(s.transactionPage))
	mux.HandleFunc("GET /api/transactions/{txid}", s.guard(s.transactionAPI))
	mux.HandleFunc("GET /in-doubt/apply", s.guard(s.applyReview))
	mux.HandleFunc("POST /in-doubt/apply", s.guard(s.apply))
	return headers(mux)
}

// headers sets the security headers of every answer: no framing, no
// external or inline scripts, no caching of data.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if len(r.URL.Path) < 8 || r.URL.Path[:8] != "/static/" {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}
