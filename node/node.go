package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/console"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/metrics"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/participants/postgres"
	"github.com/txcoord/txcoord/participants/surrealdb"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/tracing"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// OpenParticipants connects to every configured database. On error, the
// ones already opened are closed.
func OpenParticipants(ctx context.Context, cfgs []ParticipantConfig, getenv func(string) string, logger *slog.Logger) ([]participants.Participant, error) {
	var out []participants.Participant
	fail := func(err error) ([]participants.Participant, error) {
		for _, p := range out {
			p.Close()
		}
		return nil, err
	}
	for _, pc := range cfgs {
		pw, err := pc.password(getenv)
		if err != nil {
			return fail(err)
		}
		plog := logger // adapters add their participant name to every line
		switch pc.Kind {
		case "postgres":
			c := postgres.DefaultConfig()
			dsn, err := withPassword(pc.DSN, pw)
			if err != nil {
				return fail(fmt.Errorf("participant %q: %w", pc.Name, err))
			}
			c.Name, c.DSN = pc.Name, dsn
			if pc.MaxConns > 0 {
				c.MaxConns = int32(pc.MaxConns)
			}
			p, err := openOrDefer(ctx, pc.Name, participants.KindPostgres, func(ctx context.Context) (participants.Participant, error) {
				return postgres.Open(ctx, c, plog)
			}, plog)
			if err != nil {
				return fail(fmt.Errorf("participant %q: %w", pc.Name, err))
			}
			out = append(out, p)
		case "surrealdb":
			c := surrealdb.DefaultConfig()
			c.Name, c.URL, c.Namespace, c.Database, c.Username, c.Password = pc.Name, pc.URL, pc.Namespace, pc.Database, pc.Username, pw
			if pc.MaxConns > 0 {
				c.PoolSize = pc.MaxConns
			}
			p, err := openOrDefer(ctx, pc.Name, participants.KindSurrealDB, func(ctx context.Context) (participants.Participant, error) {
				return surrealdb.Open(ctx, c, plog)
			}, plog)
			if err != nil {
				return fail(fmt.Errorf("participant %q: %w", pc.Name, err))
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// openOrDefer opens a participant. If its database cannot be reached (an
// error wrapping participants.ErrUnavailable) the node starts anyway with a
// participants.Deferred that keeps trying in the background; any other
// failure — bad configuration, credentials refused, prepared transactions
// disabled — stops the start, because waiting would not fix it.
func openOrDefer(ctx context.Context, name string, kind participants.Kind,
	open func(context.Context) (participants.Participant, error), logger *slog.Logger) (participants.Participant, error) {
	p, err := open(ctx)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, participants.ErrUnavailable) {
		return nil, err
	}
	return participants.NewDeferred(name, kind, err, open, participants.DefaultDeferredRetry(), logger), nil
}

// withPassword puts a password from password_env/password_file into a DSN
// (URL or key=value form), replacing any password already there.
func withPassword(dsn, pw string) (string, error) {
	if pw == "" {
		return dsn, nil
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("dsn is not a valid URL (%v)", redact(err))
		}
		user := ""
		if u.User != nil {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, pw)
		return u.String(), nil
	}
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
	return dsn + " password='" + esc + "'", nil
}

// redact drops anything after "://" from an error that may quote a DSN.
func redact(err error) string {
	s := err.Error()
	if i := strings.Index(s, "://"); i >= 0 {
		return s[:i] + "://…"
	}
	return s
}

// Run starts the node and serves until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	var err error
	var serverTLS, raftTLS *security.Reloader
	if cfg.TLS.Enabled() {
		if serverTLS, err = security.NewReloader(cfg.TLS); err != nil {
			return err
		}
	}
	if rt := cfg.raftTLS(); rt.Enabled() {
		if raftTLS, err = security.NewReloader(rt); err != nil {
			return err
		}
	}
	var joinTLS *security.Reloader
	if cfg.JoinTLS.Enabled() {
		if joinTLS, err = security.NewReloader(cfg.JoinTLS); err != nil {
			return err
		}
	}
	var policy *security.Policy
	if cfg.Auth.Enabled() {
		if policy, err = security.LoadPolicy(cfg.Auth); err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w (is another txcoord running? set listen or TXCOORD_LISTEN)", cfg.Listen, err)
	}
	defer lis.Close()

	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	parts, err := OpenParticipants(octx, cfg.Participants, os.Getenv, logger)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range parts {
			p.Close()
		}
	}()
	// Layers around each participant, outermost first: metrics (times what
	// the coordinator sees), tracing (a span per call), the adapter.
	var tracer *tracing.Tracer
	if cfg.Tracing.Enabled() {
		if tracer, err = tracing.New(ctx, cfg.Tracing, cfg.NodeID); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tracer.Shutdown(sctx)
		}()
		for i, p := range parts {
			parts[i] = tracer.Trace(p)
		}
		logger.Info("tracing", "otlp_endpoint", cfg.Tracing.OTLPEndpoint)
	}
	m := metrics.New()
	for i, p := range parts {
		parts[i] = m.Observe(p)
	}

	rc := coordinator.RaftConfig{
		NodeID: cfg.NodeID, ClusterID: cfg.ClusterID, BindAddr: cfg.Raft.Bind, AdvertiseAddr: cfg.Raft.Advertise,
		DataDir: cfg.DataDir, Bootstrap: cfg.Raft.Bootstrap,
		HeartbeatTimeout: time.Duration(cfg.Raft.HeartbeatTimeout), ElectionTimeout: time.Duration(cfg.Raft.ElectionTimeout),
		SnapshotThreshold: cfg.Raft.SnapshotThreshold, SnapshotInterval: time.Duration(cfg.Raft.SnapshotInterval),
	}
	peerAddrs := map[string]string{}
	for _, p := range cfg.Raft.Peers {
		rc.Peers = append(rc.Peers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Raft), Suffrage: raft.Voter})
		peerAddrs[p.ID] = p.GRPC
	}
	if raftTLS != nil {
		var adv net.Addr
		if cfg.Raft.Advertise != "" {
			if adv, err = net.ResolveTCPAddr("tcp", cfg.Raft.Advertise); err != nil {
				return fmt.Errorf("raft.advertise %q: %w", cfg.Raft.Advertise, err)
			}
		}
		if rc.Stream, err = security.NewRaftStream(cfg.Raft.Bind, adv, raftTLS); err != nil {
			return fmt.Errorf("raft: listen %s with TLS: %w", cfg.Raft.Bind, err)
		}
	}
	rn, err := coordinator.OpenRaft(rc, logger)
	if err != nil {
		return err
	}
	defer rn.Close()

	advertise := cfg.Advertise
	if advertise == "" {
		advertise = lis.Addr().String()
	}
	cc := cfg.coordinatorConfig()
	cc.NodeID, cc.AdvertiseAddr, cc.PeerAddrs = cfg.NodeID, advertise, peerAddrs
	cc.Knobs = failpointKnobs(cfg.Failpoints, logger)
	cc.Observer = m
	coord, err := coordinator.New(cc, rn.Raft, rn.FSM, parts, logger)
	if err != nil {
		return err
	}
	registerRaftGauges(m, rn.Raft, coord)
	if cfg.MetricsListen != "" {
		ms, err := metrics.Listen(cfg.MetricsListen, m, metrics.Readiness{
			LeaderKnown:  func() string { _, id := rn.Raft.LeaderWithID(); return string(id) },
			Participants: parts, Prefix: coord.GIDPrefix(),
		}, logger)
		if err != nil {
			return err
		}
		defer ms.Close()
		if cfg.DebugPprof {
			ms.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
			ms.Handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
			logger.Warn("profiling endpoints are on (debug_pprof)", "url", "http://"+ms.Addr()+"/debug/pprof/")
		}
		logger.Info("metrics", "url", "http://"+ms.Addr()+"/metrics", "ready", "http://"+ms.Addr()+"/readyz")
	}

	// gRPC reads at most twice the start-time max_request_bytes; the
	// RequestSize interceptor enforces the (reloadable) limit itself and
	// names it. Interceptors run in this order: access control (guard),
	// then the request size.
	size := security.NewRequestSize(cfg.maxRequestBytes())
	ceiling := min(2*cfg.maxRequestBytes(), MaxRequestBytesCeiling)
	gopts := []grpc.ServerOption{grpc.MaxRecvMsgSize(ceiling)}
	if tracer != nil {
		gopts = append(gopts, tracer.ServerOption())
	}
	if serverTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(serverTLS.APIServerConfig(func() []string { return peerIdentities(cfg, rn.Raft) }))))
	}
	var guard *security.Guard
	if policy != nil {
		guard = security.NewGuard(policy, coord.AuditDenial)
		gopts = append(gopts, grpc.ChainUnaryInterceptor(guard.Unary), grpc.ChainStreamInterceptor(guard.Stream))
	}
	gopts = append(gopts, grpc.ChainUnaryInterceptor(size.Unary))
	gs := grpc.NewServer(gopts...)
	pb.RegisterCoordinatorServer(gs, server.New(coord))
	admin := server.NewAdmin(coord)
	if cfg.Reread != nil {
		rl := &reloader{reread: cfg.Reread, cur: cfg, t: reloadTarget{coord: coord, guard: guard, size: size,
			level: cfg.Level, ceiling: ceiling, log: logger, counted: m.ConfigReloaded}}
		admin.SetReloader(rl)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					rl.reload("SIGHUP")
				}
			}
		}()
	}
	pb.RegisterAdminServer(gs, admin)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()

	if cfg.Console.Enabled {
		cs, closeMembers, err := startConsole(ctx, cfg, coord, advertise, serverTLS, policy, guard, m, logger)
		if err != nil {
			gs.Stop()
			return err
		}
		defer closeMembers()
		defer cs.Close()
		logger.Info("console", "url", cs.URL(), "auth", policy != nil, "tls", serverTLS != nil)
	}

	if err := coord.Start(ctx); err != nil {
		gs.Stop()
		return err
	}
	logger.Info("txcoord started", "node", cfg.NodeID, "listen", lis.Addr().String(), "raft", cfg.Raft.Bind,
		"participants", len(parts), "gid_prefix", coord.GIDPrefix())
	if !cfg.Raft.Bootstrap && len(cfg.Raft.Join) > 0 {
		var opts []client.Option
		if joinTLS != nil {
			opts = append(opts, client.WithTLS(joinTLS.ClientConfig("")))
		}
		go joinCluster(ctx, cfg, advertise, logger, opts...)
	}
	// Health "" is SERVING while this node takes transactions (it leads and
	// has recovered); followers answer NOT_SERVING and redirect clients.
	go func() {
		last := healthpb.HealthCheckResponse_NOT_SERVING
		for ctx.Err() == nil {
			want := healthpb.HealthCheckResponse_NOT_SERVING
			if coord.Serving() == nil {
				want = healthpb.HealthCheckResponse_SERVING
			}
			if want != last {
				hs.SetServingStatus("", want)
				last = want
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			coord.Stop()
			return fmt.Errorf("grpc: %w", err)
		}
	}
	logger.Info("shutting down")
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	// Refuse new transactions, let held ones finish, hand leadership over:
	// clients then follow redirects to the next leader instead of meeting
	// transport errors until an election timeout passes.
	coord.Drain(drainTimeout)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		gs.Stop()
	}
	coord.Stop()
	return nil
}

// drainTimeout bounds how long a stopping node waits for the transactions
// it holds (Coordinator.Drain); with the gRPC drain after it, a shutdown
// stays within 20 s, inside the usual 30 s grace of process supervisors.
const drainTimeout = 10 * time.Second

// startConsole serves the web console on console.listen: HTTPS with the
// node's certificates when tls is configured, behind the node's policy. It
// calls this node's own services in-process and asks other members for
// their status over gRPC (with this node's certificate under TLS, and the
// signed-in client's token when it has one).
func startConsole(ctx context.Context, cfg Config, coord *coordinator.Coordinator, advertise string, serverTLS *security.Reloader,
	policy *security.Policy, guard *security.Guard, m *metrics.Metrics, logger *slog.Logger) (*console.Server, func(), error) {
	admin := server.NewAdmin(coord)
	var opts []client.Option
	if serverTLS != nil {
		opts = append(opts, client.WithTLS(serverTLS.ClientConfig("")))
	}
	members, err := client.Dial(ctx, advertise, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	cc := console.Config{
		NodeID: cfg.NodeID, Listen: cfg.Console.Listen, Policy: policy, SessionTTL: time.Duration(cfg.Console.SessionTTL),
		Backend: consoleBackend{AdminServer: admin, Server: server.New(coord)}, Figures: m.Registry,
		OnDenied: coord.AuditDenial,
		AskMember: func(ctx context.Context, addr, bearer string) (*pb.ClusterStatusResponse, error) {
			if addr == advertise {
				return admin.ClusterStatus(ctx, &pb.ClusterStatusRequest{})
			}
			if bearer != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
			}
			return members.NodeStatus(ctx, addr)
		},
	}
	if guard != nil {
		cc.CurrentPolicy = guard.Policy // a config reload replaces the guard's policy
	}
	if serverTLS != nil {
		cc.TLS = serverTLS.ServerConfigOptionalClientCert()
	}
	cs, err := console.Listen(cc, logger)
	if err != nil {
		members.Close()
		return nil, nil, err
	}
	return cs, func() { members.Close() }, nil
}

// consoleBackend is the node's Admin and Coordinator services, as the
// console calls them (in-process).
type consoleBackend struct {
	*server.AdminServer
	*server.Server
}

// registerRaftGauges exposes Raft's state and this node's load.
func registerRaftGauges(m *metrics.Metrics, r *raft.Raft, coord *coordinator.Coordinator) {
	m.GaugeFunc("txcoord_active_transactions", "Transactions in memory on this node (ACTIVE or committing).",
		func() float64 { return float64(coord.ActiveCount()) })
	m.GaugeFunc("txcoord_raft_state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
		func() float64 { return float64(r.State()) })
	m.GaugeFunc("txcoord_raft_term", "Current Raft term.", func() float64 { return float64(r.CurrentTerm()) })
	m.GaugeFunc("txcoord_raft_commit_index", "Raft commit index.", func() float64 { return float64(r.CommitIndex()) })
	m.GaugeFunc("txcoord_raft_applied_index", "Raft applied index.", func() float64 { return float64(r.AppliedIndex()) })
	m.GaugeFunc("txcoord_raft_apply_lag", "Committed Raft entries not yet applied to the decision store.",
		func() float64 { return float64(r.CommitIndex()) - float64(r.AppliedIndex()) })
	m.GaugeFunc("txcoord_ready", "1 when this node serves transactions (leader, recovered).", func() float64 {
		if coord.Serving() == nil {
			return 1
		}
		return 0
	})
}

// failpointKnobs turns --failpoint name=kill into coordinator knobs that
// SIGKILL this process at the named point (crash tests).
func failpointKnobs(fps map[string]string, logger *slog.Logger) coordinator.TestingKnobs {
	if len(fps) == 0 {
		return coordinator.TestingKnobs{}
	}
	prob := map[string]float64{}
	for name, action := range fps {
		prob[name], _ = ParseFailpointAction(action) // validated with the config
	}
	return coordinator.TestingKnobs{
		FailpointArmed: func(name string) bool { _, ok := prob[name]; return ok },
		Failpoint: func(name string) {
			if p, ok := prob[name]; ok && rand.Float64() < p {
				logger.Warn("failpoint: killing the process", "failpoint", name)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // never continue past a kill
			}
		},
	}
}

// joinCluster asks the nodes in raft.join to add this node as a voter,
// following leader redirects, with backoff, until it is in or ctx ends.
func joinCluster(ctx context.Context, cfg Config, advertise string, logger *slog.Logger, opts ...client.Option) {
	raftAddr := cfg.Raft.Advertise
	if raftAddr == "" {
		raftAddr = cfg.Raft.Bind
	}
	backoff := 200 * time.Millisecond
	for attempt := 1; ctx.Err() == nil; attempt++ {
		for _, addr := range cfg.Raft.Join {
			actx, cancel := context.WithTimeout(ctx, 40*time.Second)
			err := client.AddVoter(actx, addr, cfg.NodeID, raftAddr, advertise, opts...)
			cancel()
			if err == nil {
				logger.Info("joined the cluster", "via", addr, "attempt", attempt)
				return
			}
			logger.Warn("join failed; retrying", "via", addr, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
