package chaos

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// echoServer echoes every line back and records what it received.
type echoServer struct {
	ln  net.Listener
	mu  sync.Mutex
	got bytes.Buffer
	wg  sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					s.mu.Lock()
					s.got.WriteString(line)
					s.mu.Unlock()
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *echoServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// noLeak fails the test if goroutines started during it outlive it.
func noLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func newTestProxy(t *testing.T, target string, id Identifier) *Proxy {
	t.Helper()
	p, err := NewProxy("test", "127.0.0.1:0", target, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads the echo within d.
func roundTrip(c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// refused reports whether a connection to addr fails: the proxy resets it
// at once, which the dial itself may already see.
func refused(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return true
	}
	defer c.Close()
	_, err = roundTrip(c, bufio.NewReader(c), "x", 2*time.Second)
	return err != nil
}

func TestProxyForwards(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)
	c, r := dialLine(t, p.Addr())
	for _, msg := range []string{"one", "two", strings.Repeat("x", 100_000)} {
		got, err := roundTrip(c, r, msg, 5*time.Second)
		if err != nil || got != msg {
			t.Fatalf("echo %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
	if st := p.Stats(); st.Accepted != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxyBlackholeStallsAndHealDelivers(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)
	c, r := dialLine(t, p.Addr())
	if _, err := roundTrip(c, r, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetRule("", Rule{Blackhole: true})
	if _, err := roundTrip(c, r, "during", 300*time.Millisecond); err == nil {
		t.Fatal("a blackholed connection answered")
	}
	if strings.Contains(s.received(), "during") {
		t.Fatal("the server received bytes through a blackhole")
	}
	// A new connection is accepted but goes nowhere.
	c2, r2 := dialLine(t, p.Addr())
	if _, err := roundTrip(c2, r2, "new", 300*time.Millisecond); err == nil {
		t.Fatal("a new connection passed a blackhole")
	}
	p.Heal()
	// The held bytes are delivered, in order, after the heal.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := r.ReadString('\n')
	if err != nil || got != "during\n" {
		t.Fatalf("after heal: %q %v", got, err)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r2.ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("new connection after heal: %q %v", got, err)
	}
}

func TestProxyDelay(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)
	c, r := dialLine(t, p.Addr())
	p.SetRule("", Rule{Delay: 100 * time.Millisecond})
	start := time.Now()
	if _, err := roundTrip(c, r, "slow", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// One delay each way.
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("round trip took %s, want >= 200ms", took)
	}
}

func TestProxyResetAndRefuse(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)
	c, r := dialLine(t, p.Addr())
	if _, err := roundTrip(c, r, "hi", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(""); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	if _, err := roundTrip(c, r, "after", 2*time.Second); err == nil {
		t.Fatal("a reset connection still works")
	}
	p.SetRule("", Rule{Refuse: true})
	if !refused(p.Addr()) {
		t.Fatal("a refused connection works")
	}
	p.Heal()
	c3, r3 := dialLine(t, p.Addr())
	if got, err := roundTrip(c3, r3, "ok", 5*time.Second); err != nil || got != "ok" {
		t.Fatalf("after heal: %q %v", got, err)
	}
}

// Cut resets open connections and refuses new ones (no data either way),
// also for sources with rules of their own; Heal lets new connections
// through again.
func TestProxyCut(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)
	c1, r1 := dialLine(t, p.Addr())
	if got, err := roundTrip(c1, r1, "ping", 5*time.Second); err != nil || got != "ping" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}
	p.SetRule("some-source", Rule{Delay: time.Millisecond})
	p.Cut()
	if _, err := roundTrip(c1, r1, "after", 2*time.Second); err == nil {
		t.Fatal("an open connection still carries data after the cut")
	}
	if !refused(p.Addr()) {
		t.Fatal("a new connection carries data while cut")
	}
	p.Heal()
	c3, r3 := dialLine(t, p.Addr())
	if got, err := roundTrip(c3, r3, "ok", 5*time.Second); err != nil || got != "ok" {
		t.Fatalf("after heal: %q %v", got, err)
	}
}

func TestProxyArmedReset(t *testing.T) {
	noLeak(t)
	s := newEchoServer(t)
	p := newTestProxy(t, s.ln.Addr().String(), nil)

	// before: the server never sees the matching chunk.
	p.ArmReset("COMMIT PREPARED", false, 1)
	c, r := dialLine(t, p.Addr())
	if _, err := roundTrip(c, r, "SELECT 1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(c, r, "COMMIT PREPARED 'a'", 2*time.Second); err == nil {
		t.Fatal("armed reset did not fire")
	}
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(s.received(), "'a'") {
		t.Fatal("reset-before forwarded the chunk")
	}
	// The trigger fired once: the next connection passes.
	c2, r2 := dialLine(t, p.Addr())
	if got, err := roundTrip(c2, r2, "COMMIT PREPARED 'b'", 5*time.Second); err != nil || !strings.Contains(got, "'b'") {
		t.Fatalf("disarmed trigger still fires: %q %v", got, err)
	}

	// after: the server sees the chunk, the client gets no answer.
	p.ArmReset("COMMIT PREPARED", true, 1)
	c3, r3 := dialLine(t, p.Addr())
	if _, err := roundTrip(c3, r3, "COMMIT PREPARED 'c'", 2*time.Second); err == nil {
		t.Fatal("armed reset-after did not fire")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(s.received(), "'c'") {
		if time.Now().After(deadline) {
			t.Fatal("reset-after did not forward the chunk to the server")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := p.Stats(); st.Triggered != 2 {
		t.Fatalf("triggered %d, want 2", st.Triggered)
	}
}

func TestProxyTargetDown(t *testing.T) {
	noLeak(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := newTestProxy(t, addr, nil)
	if !refused(p.Addr()) {
		t.Fatal("a proxy to a closed port answered")
	}
}

// encodeRaftRPC writes what raft's NetworkTransport writes for one RPC.
func encodeRaftRPC(t *testing.T, typ byte, req any) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte(typ)
	if err := codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(req); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRaftSourceDecodesEveryRPCType(t *testing.T) {
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte("127.0.0.1:7")}
	// Entries whose data names other nodes must not confuse it.
	ae := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3, Entries: []*raft.Log{{Index: 1, Data: []byte(`{"ID":"n3"}`)}}}
	cases := map[string][]byte{
		"append":   encodeRaftRPC(t, 0, ae),
		"vote":     encodeRaftRPC(t, 1, &raft.RequestVoteRequest{RPCHeader: hdr, Term: 3}),
		"snapshot": encodeRaftRPC(t, 2, &raft.InstallSnapshotRequest{RPCHeader: hdr, Term: 3}),
		"timeout":  encodeRaftRPC(t, 3, &raft.TimeoutNowRequest{RPCHeader: hdr}),
		"prevote":  encodeRaftRPC(t, 4, &raft.RequestPreVoteRequest{RPCHeader: hdr, Term: 3}),
	}
	for name, msg := range cases {
		trailing := append(append([]byte{}, msg...), "more bytes"...)
		src, consumed, err := RaftSource(bytes.NewReader(trailing))
		if err != nil || src != "n2" {
			t.Errorf("%s: source %q, %v", name, src, err)
			continue
		}
		if !bytes.HasPrefix(trailing, consumed) || len(consumed) < len(msg) {
			t.Errorf("%s: consumed %d bytes that are not the stream's prefix (message is %d)", name, len(consumed), len(msg))
		}
	}
	if _, _, err := RaftSource(strings.NewReader("\x00garbage")); err == nil {
		t.Error("garbage identified")
	}
	if _, _, err := RaftSource(bytes.NewReader(encodeRaftRPC(t, 0, &raft.AppendEntriesRequest{Term: 1}))); err == nil {
		t.Error("an RPC without a sender ID identified")
	}
}

// TestRaftProxyPerSourceRules runs real raft transports through a proxy and
// cuts one sender's link while another's passes.
func TestRaftProxyPerSourceRules(t *testing.T) {
	noLeak(t)
	dst, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	stop := make(chan struct{})
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			select {
			case rpc := <-dst.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); served.Wait() }()
	p := newTestProxy(t, string(dst.LocalAddr()), RaftSource)

	send := func(from string) error {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 500*time.Millisecond, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		var resp raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(from), Addr: []byte(tr.LocalAddr())}, Term: 1}
		if err := tr.AppendEntries(raft.ServerID("dst"), raft.ServerAddress(p.Addr()), req, &resp); err != nil {
			return err
		}
		if !resp.Success {
			return errors.New("not success")
		}
		return nil
	}
	if err := send("n1"); err != nil {
		t.Fatalf("n1 through the proxy: %v", err)
	}
	p.SetRule("n1", Rule{Blackhole: true})
	if err := send("n1"); err == nil {
		t.Fatal("n1 passed its blackhole")
	}
	if err := send("n2"); err != nil {
		t.Fatalf("n2 was cut with n1: %v", err)
	}
	p.Heal()
	if err := send("n1"); err != nil {
		t.Fatalf("n1 after heal: %v", err)
	}
}
