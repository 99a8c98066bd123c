package postgres

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/txcoord/txcoord/participants"
)

// Tests of lost requests and lost answers at COMMIT and PREPARE
// TRANSACTION, through a proxy that cuts one backend's connection at the
// exact request. Killing the backend (TestAmbiguousPrepare) makes it send a
// FATAL first, which pgx reports as a server error; a connection whose
// answer just never comes is what the chaos suite's reset-commit nemesis
// produces, and what pgx reports as "conn closed" with SafeToRetry() true.

// cutMode says what the proxy does to the next request of an armed
// connection.
type cutMode int32

const (
	cutNone cutMode = iota
	// cutAnswer forwards the request, lets the server answer it to the end
	// (ReadyForQuery: the COMMIT or PREPARE has run), drops the answer and
	// closes both sides.
	cutAnswer
	// cutRequest drops the request (the client has written it) and closes
	// both sides: the server never sees it.
	cutRequest
)

func (m cutMode) String() string {
	switch m {
	case cutAnswer:
		return "answer-lost"
	case cutRequest:
		return "request-lost"
	}
	return "none"
}

// cutProxy is a TCP proxy to PostgreSQL (sslmode=disable: it reads the
// server's messages) that knows each connection's backend pid from its
// BackendKeyData, so a TestingKnobs hook, which gets the pid, can arm
// exactly the branch's connection just before COMMIT or PREPARE is sent.
type cutProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[uint32]*proxiedConn
	all   []*proxiedConn
	wg    sync.WaitGroup
}

type proxiedConn struct {
	client, server net.Conn
	mode           atomic.Int32 // cutMode armed for the next request
	dropping       atomic.Bool  // the armed request was forwarded: drop answers
	closeOnce      sync.Once
	cut            chan struct{} // closed once both sides are closed
}

func (c *proxiedConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.server.Close()
		close(c.cut)
	})
}

// newCutProxy starts a proxy to the server of dsn and returns it with the
// DSN that goes through it.
func newCutProxy(t *testing.T, dsn string) (*cutProxy, string) {
	t.Helper()
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Skipf("the proxy tests need a URL DSN in %s", dsnEnv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))), conns: map[uint32]*proxiedConn{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	u.Host = ln.Addr().String()
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return p, u.String()
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxiedConn{client: client, server: server, cut: make(chan struct{})}
		p.mu.Lock()
		p.all = append(p.all, c)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.toServer(c)
		go p.toClient(c)
	}
}

// toServer forwards the client's bytes, acting on an armed cut.
func (p *cutProxy) toServer(c *proxiedConn) {
	defer p.wg.Done()
	defer c.close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.client.Read(buf)
		if n > 0 {
			switch cutMode(c.mode.Swap(int32(cutNone))) {
			case cutRequest:
				return
			case cutAnswer:
				c.dropping.Store(true) // before the server can answer
			}
			if _, werr := c.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// toClient forwards the server's messages one by one, learns the backend
// pid, and once dropping, discards everything up to ReadyForQuery, then
// closes both sides.
func (p *cutProxy) toClient(c *proxiedConn) {
	defer p.wg.Done()
	defer c.close()
	r := bufio.NewReader(c.server)
	hdr := make([]byte, 5)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n < 4 || n > 1<<30 {
			p.t.Errorf("proxy: bad message length %d", n)
			return
		}
		msg := make([]byte, 5+n-4)
		copy(msg, hdr)
		if _, err := io.ReadFull(r, msg[5:]); err != nil {
			return
		}
		if msg[0] == 'K' && len(msg) >= 9 { // BackendKeyData: pid, secret key
			p.mu.Lock()
			p.conns[binary.BigEndian.Uint32(msg[5:9])] = c
			p.mu.Unlock()
		}
		if c.dropping.Load() {
			if msg[0] == 'Z' {
				return // the request ran to its end; its answer is lost
			}
			continue
		}
		if _, err := c.client.Write(msg); err != nil {
			return
		}
	}
}

// arm makes the connection of backend pid cut its next request.
func (p *cutProxy) arm(pid uint32, m cutMode) *proxiedConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[pid]
	if !ok {
		p.t.Errorf("proxy: no connection with backend pid %d", pid)
		return nil
	}
	c.mode.Store(int32(m))
	return c
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	all := p.all
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	p.wg.Wait()
}

// lostAnswerSetup opens a participant behind a cutting proxy. Its knobs
// arm the branch's connection with *mode just before COMMIT and PREPARE
// are sent and record the armed connection in *armed. direct is a second
// participant that reaches the database without the proxy.
type lostAnswerSetup struct {
	cfg    Config // without the proxy
	h      *pgHarness
	p      *Participant // through the proxy
	direct *Participant
	mode   atomic.Int32
	armed  atomic.Pointer[proxiedConn]
}

func newLostAnswerSetup(t *testing.T, markers bool) *lostAnswerSetup {
	t.Helper()
	cfg := testConfig(testDSN(t))
	if !markers {
		cfg.MarkerTable, cfg.MarkerRetention, cfg.MarkerGCInterval = "", 0, 0
	}
	s := &lostAnswerSetup{cfg: cfg, h: newHarness(t, cfg)}
	proxy, dsn := newCutProxy(t, cfg.DSN)
	pcfg := cfg
	pcfg.DSN = dsn
	arm := func(_ string, pid uint32) {
		if m := cutMode(s.mode.Load()); m != cutNone {
			s.armed.Store(proxy.arm(pid, m))
		}
	}
	pcfg.Knobs = &TestingKnobs{BeforeCommit: arm, BeforePrepareTransaction: arm}
	s.p = openTest(t, pcfg)
	t.Cleanup(func() { s.p.Close() })
	s.direct = openTest(t, cfg)
	t.Cleanup(func() { s.direct.Close() })
	return s
}

// waitCut waits until the proxy closed the armed connection: with
// cutAnswer, the server had answered in full by then.
func (s *lostAnswerSetup) waitCut(t *testing.T) {
	t.Helper()
	c := s.armed.Load()
	if c == nil {
		t.Fatal("no connection was armed")
	}
	select {
	case <-c.cut:
	case <-time.After(10 * time.Second):
		t.Fatal("the armed connection was not cut")
	}
}

func (s *lostAnswerSetup) committed(t *testing.T, gid string) bool {
	t.Helper()
	ok, err := s.direct.Committed(bg(t), gid)
	if err != nil {
		t.Fatalf("Committed(%s): %v", gid, err)
	}
	return ok
}

// TestLostCommitAnswer: a one-phase COMMIT whose answer is lost (the
// server committed) or whose request is lost (it did not) is ErrAmbiguous,
// never a definite failure, and Committed then tells which it was. Before
// the fix, a lost answer came back as a definite "rolled back" failure
// (chaos/README.md, "What it found", 2).
func TestLostCommitAnswer(t *testing.T) {
	s := newLostAnswerSetup(t, true)
	for _, queued := range []bool{false, true} {
		for _, mode := range []cutMode{cutAnswer, cutRequest} {
			name := mode.String() + "/executed"
			if queued {
				name = mode.String() + "/queued"
			}
			t.Run(name, func(t *testing.T) {
				gid := testGID(t, "lost-commit")
				key := "lc-" + gid
				b, err := s.p.Begin(bg(t), gid, participants.BranchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if queued {
					err = b.(queuer).Queue(s.h.Write(key, "x"))
				} else {
					_, err = b.Execute(bg(t), s.h.Write(key, "x"))
				}
				if err != nil {
					t.Fatal(err)
				}
				s.mode.Store(int32(mode))
				err = b.CommitOnePhase(bg(t))
				s.mode.Store(int32(cutNone))
				if !errors.Is(err, participants.ErrAmbiguous) {
					t.Fatalf("CommitOnePhase with the %s = %v; want ErrAmbiguous", mode, err)
				}
				s.waitCut(t)
				want := mode == cutAnswer
				if got := s.committed(t, gid); got != want {
					t.Fatalf("Committed(%s) = %v after the %s, want %v", gid, got, mode, want)
				}
				if _, visible := s.h.Committed(t, key); visible != want {
					t.Fatalf("write visible = %v after the %s, want %v", visible, mode, want)
				}
			})
		}
	}
}

// TestLostPrepareAnswer: a PREPARE TRANSACTION whose answer is lost (the
// branch is prepared) or whose request is lost is VoteNo with ErrAmbiguous
// and without ErrVoteNo, so the coordinator rolls the branch back by GID;
// before the fix, a lost answer was a definite NO and the prepared branch
// stayed until recovery. Both the pipelined prepare (xid read and
// PREPARE in one round trip) and the two-step one (a branch whose writes
// were not seen: a data-modifying WITH answers SELECT) are covered.
func TestLostPrepareAnswer(t *testing.T) {
	s := newLostAnswerSetup(t, true)
	for _, path := range []string{"pipelined", "two-step", "queued"} {
		for _, mode := range []cutMode{cutAnswer, cutRequest} {
			t.Run(path+"/"+mode.String(), func(t *testing.T) {
				gid := testGID(t, "lost-prepare")
				key := "lp-" + gid
				b, err := s.p.Begin(bg(t), gid, participants.BranchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				switch path {
				case "pipelined":
					_, err = b.Execute(bg(t), s.h.Write(key, "x"))
				case "two-step":
					_, err = b.Execute(bg(t), sqlOp(`WITH w AS (INSERT INTO cf_kv (k, v) VALUES ($1, 'x') RETURNING k) SELECT k FROM w`, key))
				case "queued":
					err = b.(queuer).Queue(s.h.Write(key, "x"))
				}
				if err != nil {
					t.Fatal(err)
				}
				s.mode.Store(int32(mode))
				v, err := b.Prepare(bg(t))
				s.mode.Store(int32(cutNone))
				if v != participants.VoteNo || !errors.Is(err, participants.ErrAmbiguous) || errors.Is(err, participants.ErrVoteNo) {
					t.Fatalf("Prepare with the %s = %v, %v; want NO with ErrAmbiguous only", mode, v, err)
				}
				s.waitCut(t)
				list, err := s.direct.InDoubt(bg(t), gid)
				if err != nil {
					t.Fatal(err)
				}
				if prepared := len(list) == 1; prepared != (mode == cutAnswer) {
					t.Fatalf("InDoubt(%s) = %v after the %s", gid, list, mode)
				}
				if mode == cutAnswer {
					// Prepared, undecided. The listing gives the branch's
					// receipt (its xid), as Prepare would have with its YES.
					receipt := list[0].Receipt
					if receipt == "" {
						t.Fatalf("InDoubt(%s) gave no receipt: %v", gid, list)
					}
					if path == "pipelined" {
						// Had the decision been commit (it cannot be after a
						// NO, but the receipt must follow what happened):
						// COMMIT PREPARED, and a retry through a participant
						// that never saw the branch finds it committed.
						if err := s.direct.CommitPreparedReceipt(bg(t), gid, receipt); err != nil {
							t.Fatal(err)
						}
						fresh := openTest(t, s.cfg)
						defer fresh.Close()
						if err := fresh.CommitPreparedReceipt(bg(t), gid, receipt); err != nil {
							t.Fatalf("retried COMMIT PREPARED with the receipt = %v; want nil (committed)", err)
						}
						return
					}
				} else if s.committed(t, gid) {
					t.Fatalf("Committed(%s) = true for a branch that was never prepared", gid)
				}
				// What the coordinator does after an ambiguous NO.
				if err := s.direct.RollbackPrepared(bg(t), gid); err != nil {
					t.Fatal(err)
				}
				if s.committed(t, gid) {
					t.Fatalf("Committed(%s) = true after RollbackPrepared", gid)
				}
				if _, visible := s.h.Committed(t, key); visible {
					t.Fatal("write of a rolled-back branch is visible")
				}
				if list, _ := s.direct.InDoubt(bg(t), gid); len(list) != 0 {
					t.Fatalf("InDoubt after RollbackPrepared = %v", list)
				}
			})
		}
	}
}

// TestLostCommitAnswerWithoutMarkers: without markers a lost COMMIT answer
// is still ErrAmbiguous, and Committed refuses to guess (ErrUnsupported),
// so the coordinator answers UNKNOWN instead of a presumed abort.
func TestLostCommitAnswerWithoutMarkers(t *testing.T) {
	s := newLostAnswerSetup(t, false)
	gid := testGID(t, "lost-commit-nm")
	b, err := s.p.Begin(bg(t), gid, participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Execute(bg(t), s.h.Write("lcnm-"+gid, "x")); err != nil {
		t.Fatal(err)
	}
	s.mode.Store(int32(cutAnswer))
	err = b.CommitOnePhase(bg(t))
	s.mode.Store(int32(cutNone))
	if !errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("CommitOnePhase with the answer lost = %v; want ErrAmbiguous", err)
	}
	s.waitCut(t)
	if _, err := s.direct.Committed(bg(t), gid); !errors.Is(err, participants.ErrUnsupported) {
		t.Fatalf("Committed without markers = %v; want ErrUnsupported", err)
	}
}

// TestUnsentIsDefinite: a COMMIT or PREPARE that cannot be sent (the
// context is done before it is written) is a definite failure: nothing
// reached the server.
func TestUnsentIsDefinite(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	var cancelNow atomic.Pointer[context.CancelFunc]
	hook := func(string, uint32) {
		if c := cancelNow.Load(); c != nil {
			(*c)()
		}
	}
	cfg.Knobs = &TestingKnobs{BeforeCommit: hook, BeforePrepareTransaction: hook}
	p := openTest(t, cfg)
	defer p.Close()
	for _, what := range []string{"commit", "prepare"} {
		t.Run(what, func(t *testing.T) {
			gid := testGID(t, "unsent-"+what)
			key := "us-" + gid
			b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Execute(bg(t), h.Write(key, "x")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(bg(t))
			defer cancel()
			cancelNow.Store(&cancel)
			defer cancelNow.Store(nil)
			if what == "commit" {
				err = b.CommitOnePhase(ctx)
				if err == nil || errors.Is(err, participants.ErrAmbiguous) || !errors.Is(err, context.Canceled) {
					t.Fatalf("CommitOnePhase with its context done before sending = %v; want a definite failure", err)
				}
			} else {
				v, err := b.Prepare(ctx)
				if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) || errors.Is(err, participants.ErrAmbiguous) {
					t.Fatalf("Prepare with its context done before sending = %v, %v; want a definite NO", v, err)
				}
			}
			if _, ok := h.Committed(t, key); ok {
				t.Fatal("write visible")
			}
			if list, _ := p.InDoubt(bg(t), gid); len(list) != 0 {
				t.Fatalf("InDoubt = %v", list)
			}
			if ok, err := p.Committed(bg(t), gid); ok || err != nil {
				t.Fatalf("Committed = %v, %v", ok, err)
			}
		})
	}
}
