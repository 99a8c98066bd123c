package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/fxamacker/cbor/v2"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
)

// errPoolClosed is returned by calls made after Close.
var errPoolClosed = errors.New("surrealdb participant closed")

// pool is a small, bounded set of signed-in connections. A connection that
// failed in transport (or timed out) is closed and dropped, never reused:
// its socket state is unknown. Safe for concurrent use.
type pool struct {
	cfg    Config
	enc    cbor.EncMode
	logger *slog.Logger

	idle  chan *conn    // connections ready for use
	slots chan struct{} // one token per open (or opening) connection: bounds the pool

	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// conn is one pooled connection: the SDK client over our socket.
type conn struct {
	ws *wsConn
	db *surrealdb.DB
}

func newPool(cfg Config, enc cbor.EncMode, logger *slog.Logger) *pool {
	return &pool{
		cfg:    cfg,
		enc:    enc,
		logger: logger,
		idle:   make(chan *conn, cfg.PoolSize),
		slots:  make(chan struct{}, cfg.PoolSize),
		done:   make(chan struct{}),
	}
}

// get returns a live connection, dialling one if the pool has room, or
// waits for one until ctx ends.
func (p *pool) get(ctx context.Context) (*conn, error) {
	for {
		select {
		case <-p.done:
			return nil, errPoolClosed
		default:
		}
		select {
		case c := <-p.idle:
			if c.ws.IsClosed() { // died while idle (server restart)
				p.drop(c)
				continue
			}
			return c, nil
		default:
		}
		select {
		case c := <-p.idle:
			if c.ws.IsClosed() {
				p.drop(c)
				continue
			}
			return c, nil
		case p.slots <- struct{}{}:
			c, err := p.dial(ctx)
			if err != nil {
				<-p.slots
				return nil, err
			}
			return c, nil
		case <-p.done:
			return nil, errPoolClosed
		case <-ctx.Done():
			return nil, &transportError{err: fmt.Errorf("waiting for a connection: %w", ctx.Err())}
		}
	}
}

// put returns c to the pool; a connection that failed in transport is closed.
func (p *pool) put(c *conn, broken bool) {
	if broken || c.ws.IsClosed() {
		p.drop(c)
		return
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		p.drop(c)
		return
	}
	select {
	case p.idle <- c:
	default: // cannot happen: idle has room for every slot
		p.drop(c)
	}
}

func (p *pool) drop(c *conn) {
	_ = c.ws.Close(context.Background())
	<-p.slots
}

// dial opens, signs in and selects the namespace and database.
func (p *pool) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	ws := newWSConn(p.cfg.URL, p.enc, p.cfg.MaxMessageBytes, p.logger)
	db, err := surrealdb.FromConnection(ctx, ws)
	if err != nil {
		return nil, &transportError{err: err}
	}
	auth := map[string]any{"user": p.cfg.Username, "pass": p.cfg.Password}
	switch p.cfg.AuthLevel {
	case AuthNamespace:
		auth["NS"] = p.cfg.Namespace
	case AuthDatabase:
		auth["NS"] = p.cfg.Namespace
		auth["DB"] = p.cfg.Database
	}
	if _, err := db.SignIn(ctx, auth); err != nil {
		_ = ws.Close(ctx)
		return nil, dialError("sign in as "+p.cfg.Username, err)
	}
	if err := db.Use(ctx, p.cfg.Namespace, p.cfg.Database); err != nil {
		_ = ws.Close(ctx)
		return nil, dialError(fmt.Sprintf("use %s/%s", p.cfg.Namespace, p.cfg.Database), err)
	}
	return &conn{ws: ws, db: db}, nil
}

// dialError keeps an RPC refusal (bad credentials) apart from transport
// trouble: only the latter is ErrUnavailable.
func dialError(what string, err error) error {
	var re *connection.RPCError
	if errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var te *transportError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w", what, &transportError{err: te.err}) // nothing was done yet
	}
	return fmt.Errorf("%s: %w", what, &transportError{err: err})
}

// close closes idle connections and makes get fail; connections in use are
// closed when they are put back.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	for {
		select {
		case c := <-p.idle:
			p.drop(c)
		default:
			return
		}
	}
}

// query runs one `query` RPC on a pooled connection within CallTimeout. A
// request that certainly did not reach the server (a connection that died
// while idle) is retried once on a fresh connection.
func (p *pool) query(ctx context.Context, sql string, vars map[string]any) (*queryReply, error) {
	for attempt := 0; ; attempt++ {
		q, err := p.queryOnce(ctx, sql, vars)
		var te *transportError
		if err != nil && errors.As(err, &te) && !te.sent && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return q, err
	}
}

func (p *pool) queryOnce(ctx context.Context, sql string, vars map[string]any) (*queryReply, error) {
	c, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	q, err := runQuery(callCtx, c.ws, sql, vars)
	var te *transportError
	p.put(c, err != nil && errors.As(err, &te))
	return q, err
}

// withConn runs fn on one connection (for interactive transactions, which
// live on one socket). A transport error from fn discards the connection.
func (p *pool) withConn(ctx context.Context, fn func(ctx context.Context, c *conn) error) error {
	c, err := p.get(ctx)
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	err = fn(callCtx, c)
	var te *transportError
	p.put(c, err != nil && errors.As(err, &te))
	return err
}
