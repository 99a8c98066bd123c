package security

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type ctxKey struct{}

// Caller is the authenticated client of a request.
type Caller struct {
	Name   string
	Policy ClientPolicy
}

// CallerFrom returns the request's authenticated client, if access control
// is on.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(ctxKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying an authenticated caller, for in-process
// callers of the services (the web console) that authenticated the client
// themselves, as the Guard does for gRPC calls.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// Guard authenticates, authorizes and rate-limits gRPC calls. Denials are
// PermissionDenied (or Unauthenticated) and reported to OnDenied (the node
// writes them to the audit trail).
type Guard struct {
	// OnDenied is told about every denial (identity may be empty).
	OnDenied func(identity, method, reason string)

	policy atomic.Pointer[Policy] // replaced by SetPolicy (config reload)

	mu       sync.Mutex
	limiters map[string]*clientLimiter
}

// clientLimiter is a client's token bucket and the settings it was made
// with (a reload that changes them replaces it).
type clientLimiter struct {
	rate  float64
	burst int
	l     *rate.Limiter
}

// NewGuard wraps a policy.
func NewGuard(p *Policy, onDenied func(identity, method, reason string)) *Guard {
	g := &Guard{OnDenied: onDenied, limiters: map[string]*clientLimiter{}}
	g.policy.Store(p)
	return g
}

// Policy is the policy in force.
func (g *Guard) Policy() *Policy { return g.policy.Load() }

// SetPolicy puts a new policy in force for the calls that start from now
// on (config reload). Rate limiters of clients whose rate or burst did not
// change keep their state. Safe for concurrent use.
func (g *Guard) SetPolicy(p *Policy) {
	if p == nil {
		panic("security: SetPolicy(nil): access control cannot be turned off by a reload")
	}
	g.policy.Store(p)
}

func (g *Guard) deny(code codes.Code, identity, method, reason string) error {
	if g.OnDenied != nil {
		g.OnDenied(identity, method, reason)
	}
	return status.Error(code, reason)
}

// identify finds the caller: a verified client certificate, else a bearer
// token in the "authorization" metadata.
func (g *Guard) identify(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			return Identity(ti.State.VerifiedChains[0][0])
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok {
			if name, ok := g.Policy().ClientForToken(tok); ok {
				return name
			}
		}
	}
	return ""
}

func (g *Guard) limiter(c ClientPolicy) *rate.Limiter {
	if c.Rate <= 0 {
		return nil
	}
	burst := c.Burst
	if burst <= 0 {
		burst = max(1, int(c.Rate))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	cl, ok := g.limiters[c.Name]
	if !ok || cl.rate != c.Rate || cl.burst != burst {
		cl = &clientLimiter{rate: c.Rate, burst: burst, l: rate.NewLimiter(rate.Limit(c.Rate), burst)}
		g.limiters[c.Name] = cl
	}
	return cl.l
}

// check runs every rule for one call and returns the context carrying the
// caller.
func (g *Guard) check(ctx context.Context, method string, req any) (context.Context, error) {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return ctx, nil // liveness needs no identity
	}
	name := g.identify(ctx)
	if name == "" {
		return nil, g.deny(codes.Unauthenticated, "", method, "authentication required: present a client certificate signed by the cluster CA or an \"authorization: Bearer <token>\" header")
	}
	c, ok := g.Policy().Client(name)
	if !ok {
		return nil, g.deny(codes.PermissionDenied, name, method, fmt.Sprintf("client %q has no access (not in auth.clients)", name))
	}
	switch {
	case strings.HasPrefix(method, "/txcoord.v1.Admin/"):
		if !c.Admin {
			return nil, g.deny(codes.PermissionDenied, name, method, fmt.Sprintf("client %q may not call the Admin service (auth.clients[].admin)", name))
		}
	case strings.HasPrefix(method, "/txcoord.v1.Coordinator/"):
		if !c.Coordinator {
			return nil, g.deny(codes.PermissionDenied, name, method, fmt.Sprintf("client %q may not call the Coordinator service (auth.clients[].coordinator)", name))
		}
	default:
		return nil, g.deny(codes.PermissionDenied, name, method, "unknown service")
	}
	for _, p := range statementParticipants(req) {
		if !c.MayUse(p) {
			return nil, g.deny(codes.PermissionDenied, name, method, fmt.Sprintf("client %q may not use participant %q (auth.clients[].participants)", name, p))
		}
	}
	if l := g.limiter(c); l != nil && !l.Allow() {
		return nil, status.Errorf(codes.ResourceExhausted, "client %q exceeds its rate limit of %g requests/s (auth.clients[].rate); retry later", name, c.Rate)
	}
	return context.WithValue(ctx, ctxKey{}, Caller{Name: name, Policy: c}), nil
}

func statementParticipants(req any) []string {
	switch r := req.(type) {
	case *pb.ExecuteRequest:
		return []string{r.GetStatement().GetParticipant()}
	case *pb.RunRequest:
		var out []string
		for _, s := range r.GetStatements() {
			out = append(out, s.GetParticipant())
		}
		return out
	}
	return nil
}

// Unary is the unary server interceptor.
func (g *Guard) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := g.check(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor (snapshot transfer).
func (g *Guard) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := g.check(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// TokenCredentials sends a bearer token with every call (client side).
type TokenCredentials struct {
	Token string
	// AllowInsecure permits sending it without TLS (loopback development).
	AllowInsecure bool
}

func (t TokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.Token}, nil
}

func (t TokenCredentials) RequireTransportSecurity() bool { return !t.AllowInsecure }
