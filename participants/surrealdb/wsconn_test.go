package surrealdb

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
	"github.com/surrealdb/surrealdb.go/surrealcbor"

	"github.com/txcoord/txcoord/participants"
)

// fakeServer is a WebSocket RPC endpoint whose behaviour per request the
// test chooses: answer, hang, or drop the connection.
type fakeServer struct {
	srv    *httptest.Server
	handle func(ws *websocket.Conn, id any, method string) (stop bool)
}

func newFakeServer(t *testing.T, handle func(ws *websocket.Conn, id any, method string) bool) *fakeServer {
	t.Helper()
	f := &fakeServer{handle: handle}
	up := websocket.Upgrader{Subprotocols: []string{"cbor"}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var req map[string]any
			if err := surrealcbor.Unmarshal(data, &req); err != nil {
				return
			}
			if f.handle(ws, req["id"], req["method"].(string)) {
				return
			}
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) url() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/rpc" }

// replyMu serializes the fake server's writes (gorilla allows one writer).
var replyMu sync.Mutex

func reply(t *testing.T, ws *websocket.Conn, id any, result any) {
	replyMu.Lock()
	defer replyMu.Unlock()
	em, _ := newEncMode()
	b, err := em.Marshal(map[string]any{"id": id, "result": result})
	if err != nil {
		t.Error(err)
		return
	}
	_ = ws.WriteMessage(websocket.BinaryMessage, b)
}

func dialFake(t *testing.T, url string) *wsConn {
	t.Helper()
	em, err := newEncMode()
	if err != nil {
		t.Fatal(err)
	}
	c := newWSConn(url, em, 1<<20, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func call(c *wsConn, d time.Duration, method string) (rawReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.call(ctx, &connection.RPCRequest{Method: method})
}

// waitGoroutines waits until the goroutine count is back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWSConnAnswers(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newFakeServer(t, func(ws *websocket.Conn, id any, method string) bool {
		reply(t, ws, id, "pong:"+method)
		return false
	})
	c := dialFake(t, f.url())
	for i := 0; i < 3; i++ {
		r, err := call(c, 5*time.Second, "ping")
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := c.dec.Unmarshal(r.Result, &s); err != nil || s != "pong:ping" {
			t.Fatalf("result %q, %v", s, err)
		}
	}
	_ = c.Close(context.Background())
	if _, err := call(c, time.Second, "ping"); !errors.Is(err, participants.ErrUnavailable) || mayHaveRun(err) {
		t.Fatalf("call after Close = %v, want unavailable, not sent", err)
	}
	f.srv.CloseClientConnections()
	waitGoroutines(t, base+2) // the httptest server keeps its listener goroutines
}

// The server dies in the middle of a request: the call fails at once
// (not after its timeout), as "may have run"; the next call fails without
// sending. Nothing panics.
func TestWSConnServerDiesMidRequest(t *testing.T) {
	f := newFakeServer(t, func(ws *websocket.Conn, id any, method string) bool {
		_ = ws.UnderlyingConn().Close() // no close frame: like a killed process
		return true
	})
	c := dialFake(t, f.url())
	start := time.Now()
	_, err := call(c, 10*time.Second, "query")
	if !errors.Is(err, participants.ErrUnavailable) || !mayHaveRun(err) {
		t.Fatalf("call = %v, want unavailable and maybe run", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a dead server took %v to notice", d)
	}
	if !c.IsClosed() {
		t.Fatal("connection not marked closed")
	}
	for i := 0; i < 1100; i++ { // gorilla panics after 1000 reads of a failed socket
		if _, err := call(c, time.Second, "query"); mayHaveRun(err) {
			t.Fatalf("call on a dead connection = %v, want not sent", err)
		}
	}
}

// A reply that arrives after its caller gave up is dropped without
// blocking the read loop: later calls still get their replies.
func TestWSConnLateReply(t *testing.T) {
	f := newFakeServer(t, func(ws *websocket.Conn, id any, method string) bool {
		if method == "slow" {
			go func() {
				time.Sleep(200 * time.Millisecond)
				reply(t, ws, id, "late")
			}()
			return false
		}
		time.Sleep(300 * time.Millisecond) // after the late reply went out
		reply(t, ws, id, "fast")
		return false
	})
	c := dialFake(t, f.url())
	defer c.Close(context.Background())
	if _, err := call(c, 50*time.Millisecond, "slow"); !errors.Is(err, context.DeadlineExceeded) || !mayHaveRun(err) {
		t.Fatalf("slow call = %v, want a timeout that may have run", err)
	}
	r, err := call(c, 5*time.Second, "fast")
	if err != nil {
		t.Fatalf("call after a late reply: %v", err)
	}
	var s string
	_ = c.dec.Unmarshal(r.Result, &s)
	if s != "fast" {
		t.Fatalf("got %q", s)
	}
}

func TestWSConnRPCError(t *testing.T) {
	f := newFakeServer(t, func(ws *websocket.Conn, id any, method string) bool {
		em, _ := newEncMode()
		b, _ := em.Marshal(map[string]any{"id": id, "error": map[string]any{"code": -32000, "message": "Parse error", "kind": "Validation"}})
		_ = ws.WriteMessage(websocket.BinaryMessage, b)
		return false
	})
	c := dialFake(t, f.url())
	defer c.Close(context.Background())
	_, err := call(c, 5*time.Second, "query")
	var re *rpcError
	if !errors.As(err, &re) || re.Kind != "Validation" || errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("call = %v, want an rpcError (the server answered)", err)
	}
	if c.IsClosed() {
		t.Fatal("an RPC error closed the connection")
	}
}

func TestPoolDiscardsDeadConnections(t *testing.T) {
	var drop atomic.Bool
	f := newFakeServer(t, func(ws *websocket.Conn, id any, method string) bool {
		switch method {
		case "signin":
			reply(t, ws, id, "token")
		case "use":
			reply(t, ws, id, nil)
		default:
			if drop.Load() {
				_ = ws.UnderlyingConn().Close()
				return true
			}
			reply(t, ws, id, []any{map[string]any{"status": "OK", "result": "ok"}})
		}
		return false
	})
	cfg := validConfig()
	cfg.URL = f.url()
	cfg.PoolSize = 2
	em, _ := newEncMode()
	p := newPool(cfg, em, slog.New(slog.DiscardHandler))
	defer p.close()
	ctx := context.Background()
	if _, err := p.query(ctx, "RETURN 1", nil); err != nil {
		t.Fatal(err)
	}
	drop.Store(true)
	if _, err := p.query(ctx, "RETURN 1", nil); !errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("query on a dropping server = %v", err)
	}
	drop.Store(false)
	// The broken connection was discarded; the pool dials a new one.
	for i := 0; i < 5; i++ {
		if _, err := p.query(ctx, "RETURN 1", nil); err != nil {
			t.Fatalf("query after reconnect: %v", err)
		}
	}
	if n := len(p.slots); n != 1 {
		t.Fatalf("%d connections open, want 1", n)
	}
}
