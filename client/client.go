// Package client is the Go client of txcoord: begin a transaction, execute
// SQL on PostgreSQL participants and record operations on SurrealDB
// participants inside it, then commit — atomically across all of them.
//
//	c, err := client.Dial(ctx, "127.0.0.1:7400")
//	tx, err := c.Begin(ctx, client.TxOptions{Timeout: 10 * time.Second})
//	_, err = tx.Exec(ctx, "orders", "INSERT INTO orders(id) VALUES ($1)", 42)
//	_, err = tx.Do(ctx, "sessions", client.Merge("cart", "u1", map[string]any{"order": 42}))
//	err = tx.Commit(ctx)
//	switch {
//	case err == nil:                               // committed everywhere
//	case errors.Is(err, client.ErrAborted):        // rolled back everywhere
//	case errors.Is(err, client.ErrOutcomeUnknown): // ask c.WaitOutcome(ctx, tx.ID())
//	}
//
// The package has few types: Client, Tx, Statement (built by SQL, Read,
// Create, Upsert, Merge, Delete, Query), Result and Error.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/txcoord/txcoord/internal/wire"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Sentinel errors; every error the client returns for a server answer is an
// *Error that matches exactly one of them with errors.Is.
var (
	// ErrAborted: the transaction was rolled back on every participant.
	ErrAborted = errors.New("transaction aborted")
	// ErrOutcomeUnknown: the commit may or may not have happened. Never treat
	// it as a failure: call WaitOutcome (or GetTransaction) to learn it.
	ErrOutcomeUnknown = errors.New("transaction outcome unknown")
	// ErrInvalidArgument: the request was malformed; Error.Field names what.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the transaction id is unknown.
	ErrNotFound = errors.New("transaction not found")
	// ErrNotActive: the transaction no longer accepts the call.
	ErrNotActive = errors.New("transaction not active")
	// ErrUnavailable: the coordinator cannot serve now; nothing was done.
	ErrUnavailable = errors.New("coordinator unavailable")
	// ErrLimit: a server limit was reached; retry later.
	ErrLimit = errors.New("server limit reached")
)

// Error is a server answer that is not OK.
type Error struct {
	Code        codes.Code
	Reason      string // ErrorInfo reason (OUTCOME_UNKNOWN, ABORTED, INVALID_ARGUMENT...)
	TxID        string
	Field       string // for ErrInvalidArgument
	Participant string // the participant that caused an abort, when known
	Leader      string // for ErrUnavailable from a follower: the leader's address
	Message     string
	kind        error
}

func (e *Error) Error() string {
	return fmt.Sprintf("txcoord: %s: %s", e.Code, e.Message)
}

// Unwrap makes errors.Is work with the sentinels above.
func (e *Error) Unwrap() error { return e.kind }

// fromStatus converts a gRPC error. inCommit says whether the call could
// have committed: a transport failure there is an unknown outcome, never a
// failure (invariant 3).
func fromStatus(err error, txid string, inCommit bool) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	e := &Error{Code: st.Code(), Message: st.Message(), TxID: txid}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == wire.Domain {
			e.Reason = info.Reason
			e.Field = info.Metadata["field"]
			e.Participant = info.Metadata["participant"]
			e.Leader = info.Metadata["leader"]
			if id := info.Metadata["txid"]; id != "" {
				e.TxID = id
			}
		}
	}
	switch {
	case e.Reason == wire.ReasonOutcomeUnknown:
		e.kind = ErrOutcomeUnknown
	case inCommit && (e.Code == codes.Unavailable || e.Code == codes.DeadlineExceeded ||
		e.Code == codes.Canceled || e.Code == codes.Unknown || e.Code == codes.Internal):
		// The request may have reached the coordinator and committed.
		e.kind = ErrOutcomeUnknown
	case e.Code == codes.Aborted:
		e.kind = ErrAborted
	case e.Code == codes.InvalidArgument:
		e.kind = ErrInvalidArgument
	case e.Code == codes.NotFound:
		e.kind = ErrNotFound
	case e.Code == codes.FailedPrecondition:
		e.kind = ErrNotActive
	case e.Code == codes.ResourceExhausted:
		e.kind = ErrLimit
	case e.Code == codes.Unavailable:
		e.kind = ErrUnavailable
	default:
		e.kind = errors.New(e.Code.String())
	}
	return e
}

// Client talks to a txcoord cluster. Safe for concurrent use. Calls go to
// the node it believes leads; an answer "not the leader, the leader is X"
// moves it to X, and an unreachable node moves it to the next address.
type Client struct {
	policy   RetryPolicy
	dialOpts []grpc.DialOption
	seeds    []string

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	current string
	owns    bool
}

// RetryPolicy bounds retries of calls that are safe to repeat (Begin,
// GetTransaction, Rollback) when the coordinator is unavailable.
type RetryPolicy struct {
	Attempts   int
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

// DefaultRetryPolicy retries for roughly ten seconds: long enough for an
// election or a restart, short enough to surface a real outage.
var DefaultRetryPolicy = RetryPolicy{Attempts: 12, MinBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second}

// Option configures Dial.
type Option func(*dialOptions)

type dialOptions struct {
	grpcOpts []grpc.DialOption
	policy   RetryPolicy
}

// WithGRPCOptions passes options to grpc.NewClient (TLS credentials...).
func WithGRPCOptions(opts ...grpc.DialOption) Option {
	return func(o *dialOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }
}

// WithTLS connects with TLS (for mutual TLS, cfg carries the client's
// certificate; see security.Reloader.ClientConfig for reloading files).
func WithTLS(cfg *tls.Config) Option {
	return WithGRPCOptions(grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

// WithToken sends "authorization: Bearer <token>" with every call. Over a
// connection without TLS it is sent only when allowInsecure is set (loopback
// development); otherwise such calls fail rather than leak the token.
func WithToken(token string, allowInsecure bool) Option {
	return WithGRPCOptions(grpc.WithPerRPCCredentials(tokenCreds{token: token, insecure: allowInsecure}))
}

type tokenCreds struct {
	token    string
	insecure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return !t.insecure }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(o *dialOptions) { o.policy = p } }

// Dial prepares a client for a cluster: addrs is one node's host:port or a
// comma-separated list of them (plaintext unless WithGRPCOptions gives
// credentials). Connections are made lazily.
func Dial(ctx context.Context, addrs string, opts ...Option) (*Client, error) {
	o := dialOptions{policy: DefaultRetryPolicy}
	for _, f := range opts {
		f(&o)
	}
	// Plaintext unless an option below chooses transport credentials (a
	// later WithTransportCredentials replaces an earlier one).
	o.grpcOpts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, o.grpcOpts...)
	var seeds []string
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil, fmt.Errorf("txcoord: dial: no address given (want host:port[,host:port...])")
	}
	c := &Client{policy: o.policy, dialOpts: o.grpcOpts, seeds: seeds, conns: map[string]*grpc.ClientConn{}, current: seeds[0], owns: true}
	if _, err := c.conn(seeds[0]); err != nil {
		return nil, err
	}
	return c, nil
}

// New wraps an existing connection (the caller closes it). Redirects to
// another node are not followed.
func New(conn *grpc.ClientConn) *Client {
	return &Client{policy: DefaultRetryPolicy, conns: map[string]*grpc.ClientConn{conn.Target(): conn},
		current: conn.Target(), seeds: []string{conn.Target()}}
}

// Close closes the connections Dial opened.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.owns {
		return nil
	}
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	if !c.owns {
		return nil, fmt.Errorf("txcoord: redirect to %s not followed (client made with New)", addr)
	}
	cc, err := grpc.NewClient(addr, c.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("txcoord: dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// target returns the node calls go to now.
func (c *Client) target() (string, pb.CoordinatorClient, pb.AdminClient, error) {
	c.mu.Lock()
	addr := c.current
	c.mu.Unlock()
	cc, err := c.conn(addr)
	if err != nil {
		return "", nil, nil, err
	}
	return addr, pb.NewCoordinatorClient(cc), pb.NewAdminClient(cc), nil
}

// follow moves the client after an UNAVAILABLE from addr: to the leader the
// node named, else to the next known address.
func (c *Client) follow(addr string, err error) {
	var ce *Error
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current != addr {
		return // someone else moved it already
	}
	if errors.As(err, &ce) && ce.Leader != "" {
		c.current = ce.Leader
		return
	}
	for i, s := range c.seeds {
		if s == addr {
			c.current = c.seeds[(i+1)%len(c.seeds)]
			return
		}
	}
	c.current = c.seeds[0]
}

// movesOff reports whether a failed call should send later calls to
// another node: the node refused (UNAVAILABLE, a transport failure
// included) or did not answer in time (DEADLINE_EXCEEDED: it may hang, as
// a paused or partitioned node does, and a hung node sends no redirect).
// Moving is cheap when wrong: another node redirects back to the leader.
func movesOff(err error) bool {
	code := status.Code(err)
	var ce *Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// retry repeats an idempotent call while the cluster is unavailable,
// following leader redirects between attempts.
func (c *Client) retry(ctx context.Context, call func(addr string, rpc pb.CoordinatorClient, admin pb.AdminClient) error) error {
	backoff := c.policy.MinBackoff
	var err error
	for attempt := 1; ; attempt++ {
		addr, rpc, admin, derr := c.target()
		if derr != nil {
			return derr
		}
		err = call(addr, rpc, admin)
		if err != nil && movesOff(err) {
			c.follow(addr, err)
		}
		if err == nil || !errors.Is(err, ErrUnavailable) || attempt >= max(c.policy.Attempts, 1) {
			return err
		}
		var ce *Error
		if errors.As(err, &ce) && ce.Leader != "" && ce.Leader != addr {
			continue // a redirect: no need to wait
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.policy.MaxBackoff)
	}
}

// Isolation levels.
type Isolation = pb.IsolationLevel

const (
	ReadCommitted  = pb.IsolationLevel_READ_COMMITTED
	RepeatableRead = pb.IsolationLevel_REPEATABLE_READ
	Serializable   = pb.IsolationLevel_SERIALIZABLE
)

// TxOptions configure a transaction; the zero value uses server defaults.
type TxOptions struct {
	Timeout   time.Duration
	Isolation Isolation
	Labels    map[string]string
	// IdempotencyKey (Run only): retrying a Run with the same key never
	// applies it twice; see RunResult.Replayed.
	IdempotencyKey string
	// AckDecision: Commit/Run return once the decision is durable, before
	// every participant applied it (reads right after may not see it yet).
	AckDecision bool
}

func (o TxOptions) proto() *pb.TransactionOptions {
	p := &pb.TransactionOptions{Isolation: o.Isolation, Labels: o.Labels, IdempotencyKey: o.IdempotencyKey}
	if o.AckDecision {
		p.Ack = pb.AckMode_ACK_DECISION
	}
	if o.Timeout > 0 {
		p.Timeout = durationpb.New(o.Timeout)
	}
	return p
}

// Tx is an interactive transaction. Use it from one goroutine at a time.
type Tx struct {
	c    *Client
	rpc  pb.CoordinatorClient // the node (leader) that runs it
	addr string
	id   string
	done bool
}

// ID is the transaction id (for GetTransaction, logs, txctl).
func (t *Tx) ID() string { return t.id }

// Begin starts a transaction.
func (c *Client) Begin(ctx context.Context, opts TxOptions) (*Tx, error) {
	var resp *pb.BeginResponse
	var on pb.CoordinatorClient
	var onAddr string
	err := c.retry(ctx, func(addr string, rpc pb.CoordinatorClient, _ pb.AdminClient) error {
		var err error
		resp, err = rpc.Begin(ctx, &pb.BeginRequest{Options: opts.proto()})
		on, onAddr = rpc, addr
		return fromStatus(err, "", false)
	})
	if err != nil {
		return nil, err
	}
	return &Tx{c: c, rpc: on, addr: onAddr, id: resp.Txid}, nil
}

// Resume returns a handle on a transaction begun elsewhere (another process
// of the same service, say), by its id.
func (c *Client) Resume(txid string) *Tx {
	addr, rpc, _, _ := c.target()
	return &Tx{c: c, rpc: rpc, addr: addr, id: txid}
}

// Exec runs SQL with positional args ($1, $2...) on a PostgreSQL participant.
func (t *Tx) Exec(ctx context.Context, participant, sql string, args ...any) (*Result, error) {
	return t.Do(ctx, participant, SQL(sql, args...))
}

// Do runs one statement on a participant.
func (t *Tx) Do(ctx context.Context, participant string, st Statement) (*Result, error) {
	ps, err := st.proto(participant)
	if err != nil {
		return nil, err
	}
	resp, err := t.rpc.Execute(ctx, &pb.ExecuteRequest{Txid: t.id, Statement: ps})
	if err != nil {
		e := fromStatus(err, t.id, false)
		if movesOff(e) {
			t.c.follow(t.addr, e)
		}
		return nil, e
	}
	return resultFromProto(resp.Result), nil
}

// Commit commits atomically on every participant the transaction touched.
// nil: committed. ErrAborted: rolled back. ErrOutcomeUnknown: ask WaitOutcome.
func (t *Tx) Commit(ctx context.Context) error {
	_, err := t.rpc.Commit(ctx, &pb.CommitRequest{Txid: t.id})
	t.done = true
	e := fromStatus(err, t.id, true)
	if err != nil && movesOff(err) {
		t.c.follow(t.addr, fromStatus(err, t.id, false)) // later calls go elsewhere
	}
	return e
}

// Rollback abandons the transaction. Safe after Commit failed or twice.
func (t *Tx) Rollback(ctx context.Context) error {
	_, err := t.rpc.Rollback(ctx, &pb.RollbackRequest{Txid: t.id})
	err = fromStatus(err, t.id, false)
	if errors.Is(err, ErrUnavailable) {
		// The node no longer leads: it rolled the transaction back when it
		// lost leadership, or the new leader's recovery will.
		err = nil
	}
	t.done = true
	if errors.Is(err, ErrNotFound) {
		return nil // timed out and rolled back already
	}
	return err
}

// Participant-addressed statement for Run.
type Step struct {
	Participant string
	Statement   Statement
}

// On pairs a participant with a statement for Run.
func On(participant string, st Statement) Step { return Step{Participant: participant, Statement: st} }

// RunResult is what a one-shot Run returned.
type RunResult struct {
	TxID    string
	Results []*Result
	// Replayed: an earlier Run with the same idempotency key had committed;
	// nothing was executed by this call and Results is empty.
	Replayed bool
}

// Run executes the steps and commits, in one call, and returns the txid and
// each statement's result. The error contract is Commit's: a transport
// failure or timeout during Run is ErrOutcomeUnknown, naming the txid when
// the transaction had begun (resolve it with WaitOutcome; with an
// idempotency key, simply call Run again). Without a txid, no node began it.
func (c *Client) Run(ctx context.Context, opts TxOptions, steps ...Step) (string, []*Result, error) {
	r, err := c.RunTx(ctx, opts, steps...)
	if r == nil {
		return "", nil, err
	}
	return r.TxID, r.Results, err
}

// RunTx is Run returning a RunResult (which tells a replay apart).
func (c *Client) RunTx(ctx context.Context, opts TxOptions, steps ...Step) (*RunResult, error) {
	req := &pb.RunRequest{Options: opts.proto()}
	for _, s := range steps {
		ps, err := s.Statement.proto(s.Participant)
		if err != nil {
			return nil, err
		}
		req.Statements = append(req.Statements, ps)
	}
	// Run may be retried only while the node refuses it before doing
	// anything: an UNAVAILABLE from the server itself (not the transport).
	var resp *pb.RunResponse
	var err error
	// The server announces the txid in a header as soon as the transaction
	// exists (wire.TxIDHeader): a call that then fails in transport or
	// times out still names the transaction whose outcome is unknown.
	var header metadata.MD
	for attempt := 1; ; attempt++ {
		addr, rpc, _, derr := c.target()
		if derr != nil {
			return nil, derr
		}
		header = nil
		resp, err = rpc.Run(ctx, req, grpc.Header(&header))
		e := fromStatus(err, "", false)
		var ce *Error
		if err == nil || !errors.As(e, &ce) || ce.Reason != wire.ReasonUnavailable || attempt >= c.policy.Attempts {
			if err != nil && movesOff(err) {
				// A transport failure or a node that did not answer in
				// time (it may be dead or hung): the outcome is unknown,
				// but the next call should try another node.
				c.follow(addr, e)
			}
			break
		}
		c.follow(addr, e)
		if ce.Leader == "" {
			select {
			case <-ctx.Done():
			case <-time.After(c.policy.MinBackoff * time.Duration(attempt)):
			}
		}
	}
	if err != nil {
		txid := ""
		if v := header.Get(wire.TxIDHeader); len(v) > 0 {
			txid = v[0]
		}
		e := fromStatus(err, txid, true)
		var ce *Error
		if errors.As(e, &ce) {
			return &RunResult{TxID: ce.TxID}, e
		}
		return nil, e
	}
	out := make([]*Result, len(resp.Results))
	for i, r := range resp.Results {
		out[i] = resultFromProto(r)
	}
	return &RunResult{TxID: resp.Txid, Results: out, Replayed: resp.Replayed}, nil
}

// Transaction is what GetTransaction reports.
type Transaction = pb.Transaction

// GetTransaction asks for a transaction's state and outcome.
func (c *Client) GetTransaction(ctx context.Context, txid string) (*Transaction, error) {
	var resp *pb.Transaction
	err := c.retry(ctx, func(_ string, rpc pb.CoordinatorClient, _ pb.AdminClient) error {
		var err error
		resp, err = rpc.GetTransaction(ctx, &pb.GetTransactionRequest{Txid: txid})
		return fromStatus(err, txid, false)
	})
	return resp, err
}

// WaitOutcome polls GetTransaction until the outcome is COMMITTED or ABORTED
// (or ctx ends): the way to resolve ErrOutcomeUnknown.
func (c *Client) WaitOutcome(ctx context.Context, txid string) (pb.Outcome, error) {
	backoff := 50 * time.Millisecond
	for {
		t, err := c.GetTransaction(ctx, txid)
		if err == nil && (t.Outcome == pb.Outcome_COMMITTED || t.Outcome == pb.Outcome_ABORTED) {
			return t.Outcome, nil
		}
		if err != nil && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrOutcomeUnknown) {
			var ce *Error
			if !errors.As(err, &ce) || (ce.Code != codes.Unavailable && ce.Code != codes.DeadlineExceeded) {
				return pb.Outcome_UNKNOWN, err
			}
		}
		select {
		case <-ctx.Done():
			return pb.Outcome_UNKNOWN, fmt.Errorf("txcoord: outcome of %s still unknown: %w", txid, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}
