package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/txcoord/txcoord/participants"
)

// Readiness tells /readyz whether the node can do useful work.
type Readiness struct {
	// LeaderKnown reports the Raft leader's id, or "" during an election.
	LeaderKnown func() string
	// Participants are probed (a bounded in-doubt listing, cached) to say
	// whether they are reachable.
	Participants []participants.Participant
	// Prefix is this cluster's GID prefix (what the probe lists).
	Prefix string
}

// probeTTL caches participant probes so a scraper polling /readyz does not
// load the databases.
const probeTTL = 2 * time.Second

// Server serves /metrics, /healthz and /readyz on its own listener.
type Server struct {
	m     *Metrics
	ready Readiness
	srv   *http.Server
	lis   net.Listener
	mux   *http.ServeMux

	mu       sync.Mutex
	probedAt time.Time
	probe    map[string]error
}

// Listen binds addr (loopback unless configured otherwise) and serves in
// the background until Close.
func Listen(addr string, m *Metrics, ready Readiness, logger *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	s := &Server{m: m, ready: ready, lis: lis, mux: mux}
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Handle adds a route to the server's listener (debug endpoints); safe to
// call while serving.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if s.ready.LeaderKnown != nil && s.ready.LeaderKnown() == "" {
		problems = append(problems, "no Raft leader is known")
	}
	for name, err := range s.probeParticipants(r.Context()) {
		if err != nil {
			problems = append(problems, fmt.Sprintf("participant %s unreachable: %v", name, err))
		}
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) probeParticipants(ctx context.Context) map[string]error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.probe != nil && time.Since(s.probedAt) < probeTTL {
		return s.probe
	}
	out := map[string]error{}
	for _, p := range s.ready.Participants {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := p.InDoubt(pctx, s.ready.Prefix)
		cancel()
		out[p.Name()] = err
	}
	s.probe, s.probedAt = out, time.Now()
	return out
}
