package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
	sdkhttp "github.com/surrealdb/surrealdb.go/pkg/connection/http"
	"github.com/surrealdb/surrealdb.go/pkg/connection/rpc"
	"github.com/surrealdb/surrealdb.go/surrealcbor"
)

// errConnClosed is the cause recorded when a socket is closed on purpose.
var errConnClosed = errors.New("surrealdb connection closed")

// wsConn is a WebSocket connection.Connection for surrealdb.FromConnection.
//
// Why not the SDK's connections: the default gorillaws client keeps reading a
// failed socket and gorilla then panics the whole process (surrealdb.go#395);
// both SDK clients leave in-flight calls waiting for their timeout when the
// socket dies, and a response that arrives after its caller gave up blocks
// their read loop for good. Here the read loop exits on the first error,
// every in-flight call fails at once with that error, and a late response is
// dropped. A wsConn is never reconnected: once closed, the pool discards it
// and dials a new one.
type wsConn struct {
	// unmarshalerSource supplies only GetUnmarshaler: its result type lives in
	// the SDK's internal package, so this package cannot declare the method
	// itself. It is an HTTP connection that is never connected; every other
	// connection.Connection method is defined on wsConn and shadows it.
	unmarshalerSource

	url    string
	enc    cbor.EncMode
	dec    *surrealcbor.Codec
	logger *slog.Logger
	// maxMessage bounds one response frame (a huge result must not exhaust memory).
	maxMessage int64

	writeMu sync.Mutex // gorilla allows one concurrent writer
	ws      *websocket.Conn

	mu      sync.Mutex
	pending map[string]chan rawReply
	done    chan struct{} // closed when the socket is dead
	err     error         // why it died; set before done is closed

	nextID atomic.Uint64
}

var _ connection.WebSocketConnection = (*wsConn)(nil)

// rawReply is one RPC response as it came off the wire.
type rawReply struct {
	ID     any             `json:"id"`
	Error  *rpcError       `json:"error,omitempty"`
	Result cbor.RawMessage `json:"result,omitempty"`
}

// rpcError is an RPC-level error (the whole request failed, as opposed to one
// statement of a query). SurrealDB 3 adds kind and details to code and message.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Kind    string `json:"kind,omitempty"`
	Details any    `json:"details,omitempty"`
}

func (e *rpcError) Error() string {
	if e.Kind != "" {
		return fmt.Sprintf("surrealdb rpc error %d (%s): %s", e.Code, e.Kind, e.Message)
	}
	return fmt.Sprintf("surrealdb rpc error %d: %s", e.Code, e.Message)
}

// unmarshalerSource is the embedded connection that provides GetUnmarshaler.
type unmarshalerSource = connection.Connection

func newWSConn(url string, enc cbor.EncMode, maxMessage int64, logger *slog.Logger) *wsConn {
	dec := surrealcbor.New()
	return &wsConn{
		unmarshalerSource: sdkhttp.New(&connection.Config{Marshaler: dec, Unmarshaler: dec}),
		url:               url,
		enc:               enc,
		dec:               dec,
		logger:            logger,
		maxMessage:        maxMessage,
		pending:           make(map[string]chan rawReply),
		done:              make(chan struct{}),
	}
}

// Connect dials the server. It must be called once, before any other method.
func (c *wsConn) Connect(ctx context.Context) error {
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: 10 * time.Second, // ctx usually bounds it sooner
		Subprotocols:     []string{"cbor"},
	}
	ws, resp, err := d.DialContext(ctx, c.url, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return fmt.Errorf("dial %s: %w", c.url, err)
	}
	ws.SetReadLimit(c.maxMessage)
	c.ws = ws
	go c.readLoop()
	return nil
}

// IsClosed reports whether the socket is dead; a dead wsConn is never reused.
func (c *wsConn) IsClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Close closes the socket and fails every in-flight call. Idempotent.
func (c *wsConn) Close(context.Context) error {
	c.fail(errConnClosed)
	return nil
}

// fail marks the connection dead with cause err (the first cause wins) and
// closes the socket, which ends the read loop.
func (c *wsConn) fail(err error) {
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return
	default:
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	if c.ws != nil {
		c.writeMu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(100*time.Millisecond))
		c.writeMu.Unlock()
		_ = c.ws.Close()
	}
}

func (c *wsConn) cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *wsConn) readLoop() {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			// Any read error is final: gorilla panics on repeated reads of a failed socket.
			c.fail(fmt.Errorf("surrealdb connection lost: %w", err))
			return
		}
		var r rawReply
		if err := c.dec.Unmarshal(data, &r); err != nil {
			c.logger.Warn("surrealdb: undecodable message dropped", "error", err)
			continue
		}
		id, ok := r.ID.(string)
		if !ok || id == "" {
			// Live query notifications and id-less errors: nobody waits for them.
			if r.Error != nil {
				c.logger.Warn("surrealdb: error without request id", "error", r.Error.Message)
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- r // buffered: never blocks, even if the caller gave up
		}
	}
}

// call sends one request and waits for its reply, the context, or the
// socket's death, whichever comes first. An RPC-level error is returned as
// *rpcError (the server answered); a failure to get an answer as
// *transportError, whose sent field says whether the request may have
// reached the server (a failed write counts as sent: part of it may have).
func (c *wsConn) call(ctx context.Context, req *connection.RPCRequest) (rawReply, error) {
	id := strconv.FormatUint(c.nextID.Add(1), 36)
	req.ID = id
	data, err := c.enc.Marshal(req)
	if err != nil {
		return rawReply{}, fmt.Errorf("encode %s request: %w", req.Method, err)
	}
	if err := ctx.Err(); err != nil {
		return rawReply{}, &transportError{err: err}
	}
	ch := make(chan rawReply, 1)
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return rawReply{}, &transportError{err: c.cause()}
	default:
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second) // callers always pass a deadline; this is a backstop
	}
	c.writeMu.Lock()
	_ = c.ws.SetWriteDeadline(deadline)
	err = c.ws.WriteMessage(websocket.BinaryMessage, data)
	c.writeMu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("surrealdb connection lost: %w", err))
		return rawReply{}, &transportError{err: err, sent: true}
	}

	select {
	case r := <-ch:
		if r.Error != nil {
			return r, r.Error
		}
		return r, nil
	case <-c.done:
		return rawReply{}, &transportError{err: c.cause(), sent: true}
	case <-ctx.Done():
		return rawReply{}, &transportError{err: ctx.Err(), sent: true}
	}
}

// Call implements connection.Connection for the SDK's own requests (signin, use).
func (c *wsConn) Call(ctx context.Context, req *connection.RPCRequest) (*connection.RPCResponse[cbor.RawMessage], error) {
	r, err := c.call(ctx, req)
	if err != nil {
		var re *rpcError
		if errors.As(err, &re) {
			return nil, &connection.RPCError{Code: re.Code, Message: re.Message}
		}
		return nil, err
	}
	res := &connection.RPCResponse[cbor.RawMessage]{ID: r.ID}
	if r.Result != nil {
		raw := r.Result
		res.Result = &raw
	}
	return res, nil
}

// Send implements connection.Connection.
func (c *wsConn) Send(ctx context.Context, method string, params ...any) (*connection.RPCResponse[cbor.RawMessage], error) {
	return c.Call(ctx, &connection.RPCRequest{Method: method, Params: params})
}

func (c *wsConn) Use(ctx context.Context, ns, db string) error {
	return connection.Send[any](c, ctx, nil, "use", ns, db)
}

func (c *wsConn) Let(ctx context.Context, key string, value any) error {
	return connection.Send[any](c, ctx, nil, "let", key, value)
}

func (c *wsConn) Unset(ctx context.Context, key string) error {
	return connection.Send[any](c, ctx, nil, "unset", key)
}

func (c *wsConn) Authenticate(ctx context.Context, token string) error {
	return rpc.Authenticate(c, ctx, token)
}

func (c *wsConn) SignUp(ctx context.Context, authData any) (string, error) {
	return rpc.SignUp(c, ctx, authData)
}

func (c *wsConn) SignUpWithRefresh(ctx context.Context, authData any) (*connection.Tokens, error) {
	return rpc.SignUpWithRefresh(c, ctx, authData)
}

func (c *wsConn) SignIn(ctx context.Context, authData any) (string, error) {
	return rpc.SignIn(c, ctx, authData)
}

func (c *wsConn) SignInWithRefresh(ctx context.Context, authData any) (*connection.Tokens, error) {
	return rpc.SignInWithRefresh(c, ctx, authData)
}

func (c *wsConn) Invalidate(ctx context.Context) error {
	return rpc.Invalidate(c, ctx)
}

// Live queries are not used by the adapter.
func (c *wsConn) LiveNotifications(string) (chan connection.Notification, error) {
	return nil, errors.New("surrealdb participant: live queries are not supported")
}

func (c *wsConn) CloseLiveNotifications(string) error {
	return errors.New("surrealdb participant: live queries are not supported")
}
