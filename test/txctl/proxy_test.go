package txctl_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/testkit"
)

// proxy is a TCP forwarder between txcoord and one participant's database.
// Cut makes the database unreachable for txcoord: open connections are
// reset and new ones are accepted and reset at once. Heal lets new
// connections through again (the adapters reconnect).
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln := listenUnused(t)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// listenUnused listens on a loopback port freePort has not handed out (a
// node may be about to bind that one).
func listenUnused(t *testing.T) net.Listener { return testkit.ListenUnused(t) }

// addr is what the node dials instead of the database.
func (p *proxy) addr() string { return p.ln.Addr().String() }

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

// Cut makes the database unreachable through the proxy.
func (p *proxy) Cut() {
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

func (p *proxy) close() {
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

// reset closes a connection with RST, as a dropped link looks to a peer.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
