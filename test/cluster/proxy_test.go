package cluster

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a controllable TCP forwarder in front of one Raft link. While
// cut it is a black hole: every open connection is reset and every new one
// is accepted and reset at once, so no byte passes either way; Heal lets new
// connections through again (Raft redials).
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// newProxy listens on a loopback port and forwards to target.
func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(in) {
			reset(in)
			continue
		}
		p.wg.Add(1)
		go p.forward(in)
	}
}

// track registers a connection unless the proxy is cut or closed.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *proxy) forward(in net.Conn) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		p.untrack(in)
		reset(in)
		return
	}
	if !p.track(out) {
		p.untrack(in)
		reset(in)
		reset(out)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(out, in)
		reset(out)
		reset(in)
	}()
	io.Copy(in, out)
	reset(in)
	reset(out)
	p.untrack(in, out)
}

// Blackhole cuts the link: open connections are reset, new ones refused.
func (p *proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
}

// Heal lets connections through again.
func (p *proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy and waits for its goroutines.
func (p *proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// reset closes a connection with RST (no lingering, no FIN handshake), as a
// dropped link looks to a peer that keeps writing.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// TestProxy checks the proxy itself: it forwards, a cut resets open
// connections and refuses new data, and a heal lets new connections through.
func TestProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var srv sync.WaitGroup
	srv.Add(1)
	go func() { // line echo server
		defer srv.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			srv.Add(1)
			go func() {
				defer srv.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	defer func() { ln.Close(); srv.Wait() }()

	px, err := newProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()

	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			t.Fatalf("echo returned %q", line)
		}
		return err
	}
	c1, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := roundTrip(c1); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	px.Blackhole()
	if err := roundTrip(c1); err == nil {
		t.Fatal("an open connection still carries data after the cut")
	}
	if c2, err := net.Dial("tcp", px.Addr()); err == nil {
		if err := roundTrip(c2); err == nil {
			t.Fatal("a new connection carries data while cut")
		}
		c2.Close()
	}

	px.Heal()
	c3, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := roundTrip(c3); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}
