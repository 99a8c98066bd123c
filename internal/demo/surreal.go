package demo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
)

// SurrealParams locate a SurrealDB database.
type SurrealParams struct {
	URL, User, Pass, Namespace, Database string
}

// surrealCallTimeout bounds one RPC when the caller's context allows longer:
// a dead server must fail the check, not hang it.
const surrealCallTimeout = 15 * time.Second

// surrealMaxMessage bounds one reply frame (the demo's and the bench's reads
// are a few kilobytes; anything near this is a bug).
const surrealMaxMessage = 64 << 20

// SurrealConn is a minimal client of the SurrealDB RPC protocol (CBOR over
// WebSocket at /rpc), used to read and write the stores directly, next to
// txcoord: the demo's balance and intent checks, the bench's baseline.
//
// Why not the SDK: its gws connection (lxzan/gws) is not a dependency of this
// module, and its gorillaws connection panics the process when the server dies
// mid-request (surrealdb.go#395). This one is synchronous — one request in
// flight, the reply read on the caller's goroutine under a deadline — so a
// dead socket is just an error; after any transport error the connection is
// unusable (dial a new one). Safe for concurrent use (calls serialize).
type SurrealConn struct {
	mu     sync.Mutex
	ws     *websocket.Conn
	next   uint64
	broken error
}

// DialSurreal connects, signs in and selects the namespace and database.
func DialSurreal(ctx context.Context, p SurrealParams) (*SurrealConn, error) {
	d := websocket.Dialer{Subprotocols: []string{"cbor"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, p.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("surrealdb: dial %s: %w", p.URL, err)
	}
	ws.SetReadLimit(surrealMaxMessage)
	c := &SurrealConn{ws: ws}
	if _, err := c.call(ctx, "signin", map[string]any{"user": p.User, "pass": p.Pass}); err != nil {
		c.Close()
		return nil, fmt.Errorf("surrealdb: signin as %s: %w", p.User, err)
	}
	if _, err := c.call(ctx, "use", p.Namespace, p.Database); err != nil {
		c.Close()
		return nil, fmt.Errorf("surrealdb: use %s/%s: %w", p.Namespace, p.Database, err)
	}
	return c, nil
}

// Close closes the socket.
func (c *SurrealConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = errors.New("closed")
	}
	return c.ws.Close()
}

// Err is nil while the connection is usable; after a transport error (or
// Close) it says why it is not, and the caller dials a new one.
func (c *SurrealConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

type surrealRPCError struct {
	Code    int    `cbor:"code"`
	Message string `cbor:"message"`
}

func (e *surrealRPCError) Error() string { return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message) }

type surrealReply struct {
	ID     any              `cbor:"id"`
	Result cbor.RawMessage  `cbor:"result"`
	Error  *surrealRPCError `cbor:"error"`
}

func (c *SurrealConn) call(ctx context.Context, method string, params ...any) (cbor.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, fmt.Errorf("connection unusable after %w", c.broken)
	}
	deadline := time.Now().Add(surrealCallTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.next++
	id := strconv.FormatUint(c.next, 10)
	if params == nil {
		params = []any{}
	}
	msg, err := cbor.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	fail := func(err error) (cbor.RawMessage, error) {
		c.broken = err
		c.ws.Close()
		return nil, err
	}
	c.ws.SetWriteDeadline(deadline) //nolint:errcheck // the write reports it
	if err := c.ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		return fail(fmt.Errorf("%s: write: %w", method, err))
	}
	for {
		c.ws.SetReadDeadline(deadline) //nolint:errcheck // the read reports it
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return fail(fmt.Errorf("%s: read: %w", method, err))
		}
		var r surrealReply
		if err := cbor.Unmarshal(data, &r); err != nil {
			return fail(fmt.Errorf("%s: decode reply: %w", method, err))
		}
		if fmt.Sprint(r.ID) != id {
			continue // a notification, or the reply to a call that gave up
		}
		if r.Error != nil {
			return nil, r.Error
		}
		return r.Result, nil
	}
}

type surrealStatement struct {
	Status string          `cbor:"status"`
	Result cbor.RawMessage `cbor:"result"`
	Kind   string          `cbor:"kind"`
}

// Query runs SurrealQL with named vars and returns each statement's result.
// A failed statement is an error naming the statement and the server's message.
func (c *SurrealConn) Query(ctx context.Context, sql string, vars map[string]any) ([]cbor.RawMessage, error) {
	if vars == nil {
		vars = map[string]any{}
	}
	raw, err := c.call(ctx, "query", sql, vars)
	if err != nil {
		return nil, fmt.Errorf("surrealdb query %q: %w", sql, err)
	}
	var stmts []surrealStatement
	if err := cbor.Unmarshal(raw, &stmts); err != nil {
		return nil, fmt.Errorf("surrealdb query %q: decode: %w", sql, err)
	}
	out := make([]cbor.RawMessage, len(stmts))
	for i, s := range stmts {
		if s.Status != "OK" {
			var msg any
			_ = cbor.Unmarshal(s.Result, &msg)
			return nil, fmt.Errorf("surrealdb query %q: statement %d: %s %s: %v", sql, i+1, s.Status, s.Kind, msg)
		}
		out[i] = s.Result
	}
	return out, nil
}

// QueryValue runs a query and decodes the last statement's result into dst.
func (c *SurrealConn) QueryValue(ctx context.Context, sql string, vars map[string]any, dst any) error {
	res, err := c.Query(ctx, sql, vars)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return fmt.Errorf("surrealdb query %q: no statement results", sql)
	}
	if err := cbor.Unmarshal(res[len(res)-1], dst); err != nil {
		return fmt.Errorf("surrealdb query %q: decode result: %w", sql, err)
	}
	return nil
}

// TableExists reports whether the current database defines table (tables are
// defined implicitly by the first write).
func (c *SurrealConn) TableExists(ctx context.Context, table string) (bool, error) {
	var info map[string]any
	if err := c.QueryValue(ctx, "RETURN (INFO FOR DB).tables;", nil, &info); err != nil {
		return false, err
	}
	_, ok := info[table]
	return ok, nil
}

// Int64 converts a decoded number (CBOR or txcoord wire) to int64; ok is
// false for anything else, including a float with a fraction.
func Int64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint64:
		if n > 1<<63-1 {
			return 0, false
		}
		return int64(n), true
	case uint32:
		return int64(n), true
	case float64:
		if n != float64(int64(n)) {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}
