package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Rule is what a Proxy does with the traffic of one source. The zero Rule
// forwards everything at once.
type Rule struct {
	// Blackhole stalls traffic in both directions: bytes are neither
	// forwarded nor dropped, as in a network partition (TCP buffers fill,
	// peers time out). When the rule is lifted, held bytes flow again.
	// New connections are accepted but not dialled upstream meanwhile.
	Blackhole bool
	// Refuse resets new connections at once (a peer that is down).
	Refuse bool
	// Delay is added before every chunk forwarded, in both directions.
	Delay time.Duration
}

// Identifier reads the first bytes a client sends and names the source of
// the connection (the Raft server that dialled, say). It returns the bytes
// it consumed so the proxy can forward them.
type Identifier func(r io.Reader) (source string, consumed []byte, err error)

// identifyTimeout bounds how long a new connection may take to identify
// itself (a Raft peer sends its first RPC at once).
const identifyTimeout = 10 * time.Second

// Proxy forwards TCP connections from a listening address to a target, and
// can stall, delay or reset them per source (see Rule and Identifier) or
// when a client sends a given byte pattern (ArmReset). Safe for concurrent
// use. Close stops it and closes every connection it holds.
type Proxy struct {
	name     string
	target   string
	ln       net.Listener
	identify Identifier

	mu       sync.Mutex
	def      Rule            // for sources without their own rule
	rules    map[string]Rule // by source
	changed  chan struct{}   // closed and replaced when rules change
	links    map[*link]struct{}
	triggers []*trigger
	closed   bool
	stats    ProxyStats

	wg sync.WaitGroup
}

// ProxyStats counts what a proxy did.
type ProxyStats struct {
	Accepted  int // connections accepted
	Resets    int // connections reset by Reset or a rule
	Triggered int // connections reset by an armed pattern
}

type trigger struct {
	pattern   []byte
	after     bool // forward the matching chunk first (the server acts, its answer is lost)
	remaining int
}

// link is one proxied connection: client side, upstream side.
type link struct {
	source   string
	client   net.Conn
	upstream net.Conn // nil until dialled
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	// mute drops everything the server sends from now on (set before a
	// reset-after trigger forwards its chunk, so the answer cannot slip
	// through before the client side is reset).
	mute atomic.Bool
}

// NewProxy listens on listen ("127.0.0.1:0" picks a port) and forwards to
// target. identify may be nil: every connection's source is then "".
func NewProxy(name, listen, target string, identify Identifier) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: listen %s: %w", name, listen, err)
	}
	p := &Proxy{name: name, target: target, ln: ln, identify: identify,
		rules: map[string]Rule{}, changed: make(chan struct{}), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Name is the proxy's name (for logs and reports).
func (p *Proxy) Name() string { return p.name }

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetRule sets the rule for connections from source; source "" sets the
// default for every source without its own rule. Open connections follow
// the new rule from their next chunk.
func (p *Proxy) SetRule(source string, r Rule) {
	p.mu.Lock()
	if source == "" {
		p.def = r
	} else {
		p.rules[source] = r
	}
	p.notifyLocked()
	p.mu.Unlock()
}

// Cut makes the target unreachable through the proxy, as a peer that went
// down: every rule is replaced by Refuse for every source (new connections
// are accepted and reset at once) and every open connection is reset, so no
// byte passes either way. Heal undoes it.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.def = Rule{Refuse: true}
	p.rules = map[string]Rule{}
	p.notifyLocked()
	p.mu.Unlock()
	p.Reset("")
}

// Heal lifts every rule and disarms every pattern: traffic flows again,
// including the bytes held by stalled connections.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.def = Rule{}
	p.rules = map[string]Rule{}
	p.triggers = nil
	p.notifyLocked()
	p.mu.Unlock()
}

func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Reset resets (TCP RST) every open connection from source ("" for all
// sources) and returns how many it reset.
func (p *Proxy) Reset(source string) int {
	p.mu.Lock()
	var ls []*link
	for l := range p.links {
		if source == "" || l.source == source {
			ls = append(ls, l)
		}
	}
	p.stats.Resets += len(ls)
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
	return len(ls)
}

// ArmReset resets the next n connections whose client sends a chunk
// containing pattern: before forwarding that chunk (after=false: the server
// never sees it) or right after (after=true: the server acts on it but its
// answer is lost, e.g. a COMMIT PREPARED whose acknowledgement never
// arrives). A pattern split across two reads is not seen; at the sizes of
// SQL statements on loopback that is rare and only makes the fault miss.
func (p *Proxy) ArmReset(pattern string, after bool, n int) {
	p.mu.Lock()
	p.triggers = append(p.triggers, &trigger{pattern: []byte(pattern), after: after, remaining: n})
	p.mu.Unlock()
}

// Stats returns the counters so far.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// OpenConns counts the connections the proxy holds now.
func (p *Proxy) OpenConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	var ls []*link
	for l := range p.links {
		ls = append(ls, l)
	}
	p.notifyLocked()
	p.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) rule(source string) (Rule, chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.rules[source]
	if !ok {
		r = p.def
	}
	return r, p.changed, p.closed
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.links[l] = struct{}{}
		p.stats.Accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

func (p *Proxy) forget(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer p.forget(l)
	defer l.close()
	var prefix []byte
	if p.identify != nil {
		l.client.SetReadDeadline(time.Now().Add(identifyTimeout))
		src, consumed, err := p.identify(l.client)
		if err != nil {
			return
		}
		l.client.SetReadDeadline(time.Time{})
		l.source, prefix = src, consumed
	}
	r, _, _ := p.rule(l.source)
	if r.Refuse {
		p.mu.Lock()
		p.stats.Resets++
		p.mu.Unlock()
		l.reset()
		return
	}
	if !p.waitPass(l) {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		l.reset() // the target is down: the client sees a reset, as with no proxy
		return
	}
	l.mu.Lock()
	l.upstream = up
	l.mu.Unlock()
	select {
	case <-l.done: // reset or closed while dialling
		up.Close()
		return
	default:
	}
	if len(prefix) > 0 {
		if _, err := up.Write(prefix); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, l.client, up, true) }()
	go func() { defer wg.Done(); p.pipe(l, up, l.client, false) }()
	wg.Wait()
}

// waitPass blocks while the link's source is blackholed; false if the link
// or the proxy closed meanwhile.
func (p *Proxy) waitPass(l *link) bool {
	for {
		r, ch, closed := p.rule(l.source)
		if closed {
			return false
		}
		if !r.Blackhole {
			return true
		}
		select {
		case <-ch:
		case <-l.done:
			return false
		}
	}
}

// pipe copies src to dst chunk by chunk, applying the source's rule to
// every chunk; fromClient marks the client→server direction, where armed
// patterns are looked for.
func (p *Proxy) pipe(l *link, src, dst net.Conn, fromClient bool) {
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitPass(l) {
				return
			}
			if r, _, _ := p.rule(l.source); r.Delay > 0 {
				select {
				case <-time.After(r.Delay):
				case <-l.done:
					return
				}
			}
			if !fromClient && l.mute.Load() {
				return
			}
			if fromClient {
				if t := p.match(buf[:n]); t != nil {
					if t.after {
						l.mute.Store(true)
						dst.Write(buf[:n])
						l.resetClientKeepUpstream()
					} else {
						l.reset()
					}
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// match consumes one firing of the first armed trigger whose pattern is in
// chunk.
func (p *Proxy) match(chunk []byte) *trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, t := range p.triggers {
		if t.remaining > 0 && bytes.Contains(chunk, t.pattern) {
			t.remaining--
			if t.remaining == 0 {
				p.triggers = append(p.triggers[:i:i], p.triggers[i+1:]...)
			}
			p.stats.Triggered++
			return t
		}
	}
	return nil
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.mu.Lock()
		if l.upstream != nil {
			l.upstream.Close()
		}
		l.mu.Unlock()
	})
}

// reset closes both sides with an RST (SO_LINGER 0), as a failed network does.
func (l *link) reset() {
	setLinger0(l.client)
	l.mu.Lock()
	if l.upstream != nil {
		setLinger0(l.upstream)
	}
	l.mu.Unlock()
	l.close()
}

// resetClientKeepUpstream resets the client side at once and closes the
// upstream side gracefully a moment later, so that the server reads and
// executes what was just forwarded while its answer goes nowhere.
func (l *link) resetClientKeepUpstream() {
	l.mu.Lock()
	up := l.upstream
	l.upstream = nil
	l.mu.Unlock()
	setLinger0(l.client)
	l.close()
	if up != nil {
		go func() {
			up.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			io.Copy(io.Discard, up) // let the server finish; drop its answer
			up.Close()
		}()
	}
}

func setLinger0(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}
