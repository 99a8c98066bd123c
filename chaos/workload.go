package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txcoord/txcoord/client"
	"google.golang.org/grpc/codes"
)

// Workloads run concurrent clients against the cluster and record every
// operation in a History:
//
//   - transfer (bank): move 1..20 between two accounts chosen among
//     PostgreSQL txcoord_a, txcoord_b and SurrealDB; each leg updates the
//     balance and logs the delta under the transfer's tag; a debit that
//     would go negative rolls back.
//   - append (atomic visibility): append one unique element to the same
//     list in PostgreSQL and SurrealDB (and txcoord_b one time in three).
//   - idem (retry/idempotency): a one-shot Run with an idempotency key,
//     retried with the same key after every unknown outcome or abort,
//     inserting one row per participant: a retry applied twice shows as
//     two rows.
//
// Interactive transactions that fail before Commit are fail (the
// coordinator never commits without Commit); Commit and Run answers other
// than success and ABORTED are unknown.
type Workloads struct {
	Hist      *History
	Addrs     []string
	Spec      BankSpec
	Lists     []string
	Seed      uint64
	OpTimeout time.Duration // one interactive transaction, Begin to Commit
	RunTry    time.Duration // one attempt of an idem Run
	RunTries  int           // attempts per idem operation
	// CrossOnly makes every transfer span two participants (no one-phase
	// commits).
	CrossOnly bool

	tags   atomic.Int64
	opsRun atomic.Int64
}

// Mix is how many concurrent clients run each workload.
type Mix struct{ Transfer, Append, Idem int }

// Run starts the workers; they stop when ctx ends. The returned function
// waits for them (every operation in flight completes or times out first).
func (w *Workloads) Run(ctx context.Context, mix Mix) (wait func()) {
	var wg sync.WaitGroup
	proc := 0
	start := func(kind string, n int) {
		for i := 0; i < n; i++ {
			proc++
			wk := &worker{w: w, proc: proc, kind: kind, rng: rand.New(rand.NewPCG(w.Seed, uint64(proc)))}
			wg.Add(1)
			go func() {
				defer wg.Done()
				wk.loop(ctx)
			}()
		}
	}
	start(FTransfer, mix.Transfer)
	start(FAppend, mix.Append)
	start(FIdem, mix.Idem)
	return wg.Wait
}

type worker struct {
	w    *Workloads
	proc int
	kind string
	rng  *rand.Rand
	cl   *client.Client
	rot  int
}

func (wk *worker) loop(ctx context.Context) {
	defer func() {
		if wk.cl != nil {
			wk.cl.Close()
		}
	}()
	for ctx.Err() == nil {
		if err := wk.dial(ctx); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var err error
		switch wk.kind {
		case FTransfer:
			err = wk.transfer(ctx)
		case FAppend:
			err = wk.appendOp(ctx)
		case FIdem:
			err = wk.idem(ctx)
		}
		wk.w.opsRun.Add(1)
		if stuck(err) {
			wk.rotate()
		}
		if err != nil {
			// Back off a little: a store that is down fails every call at
			// once, and a spinning client only inflates the history.
			sleepCtx(ctx, time.Duration(10+wk.rng.IntN(90))*time.Millisecond)
		}
	}
}

// dial makes the worker's client, starting at a node that depends on how
// often it rotated.
func (wk *worker) dial(ctx context.Context) error {
	if wk.cl != nil {
		return nil
	}
	n := len(wk.w.Addrs)
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = wk.w.Addrs[(wk.rot+wk.proc+i)%n]
	}
	cl, err := client.Dial(ctx, strings.Join(addrs, ","),
		client.WithRetryPolicy(client.RetryPolicy{Attempts: 8, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}))
	if err != nil {
		return err
	}
	wk.cl = cl
	return nil
}

// rotate drops the client so that the next one starts at another node.
// The Go client moves to the leader on UNAVAILABLE, but a node that does
// not answer at all (SIGSTOPped, blackholed) only times out, and the client
// would keep calling it.
func (wk *worker) rotate() {
	if wk.cl != nil {
		wk.cl.Close()
		wk.cl = nil
	}
	wk.rot++
}

// stuck: the call timed out, or failed in transport (the node is down or
// unreachable), rather than being refused by a node. The Go client moves
// to another node after UNAVAILABLE and after a transport failure, but a
// node that hangs (SIGSTOPped, unreachable without a reset) only times out
// and the client keeps calling it; workers then start over at another node.
func stuck(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		return false
	}
	return ce.Code == codes.DeadlineExceeded || (ce.Code == codes.Unavailable && ce.Reason == "")
}

func (wk *worker) tag(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, wk.proc, wk.w.tags.Add(1))
}

// outcome classifies the answer to Commit or Run: only success and ABORTED
// are definite.
func outcome(err error) Type {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, client.ErrAborted):
		return Fail
	}
	return Unknown
}

var errInsufficient = errors.New("insufficient funds: rolled back by the client")

// rollback abandons tx on a context of its own (the op's may have ended).
func rollback(tx *client.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tx.Rollback(ctx)
}

func (wk *worker) transfer(ctx context.Context) error {
	accts := wk.w.Spec.Accounts
	i := wk.rng.IntN(len(accts))
	j := wk.rng.IntN(len(accts) - 1)
	if j >= i {
		j++
	}
	for wk.w.CrossOnly && accountPart(accts[i]) == accountPart(accts[j]) {
		j = wk.rng.IntN(len(accts))
	}
	from, to := accts[i], accts[j]
	amount := 1 + wk.rng.Int64N(20)
	fp, _ := splitAccount(from)
	tp, _ := splitAccount(to)
	v := &Value{Tag: wk.tag("t"), Writes: map[string]int{}, From: from, To: to, Amount: amount}
	v.Writes[fp]++
	v.Writes[tp]++
	op := wk.w.Hist.Invoke(wk.proc, FTransfer, v)
	done := func(typ Type, txid string, err error) error {
		wk.w.Hist.Complete(wk.proc, op, FTransfer, typ, txid, nil, err)
		return err
	}
	octx, cancel := context.WithTimeout(ctx, wk.w.OpTimeout)
	defer cancel()
	tx, err := wk.cl.Begin(octx, client.TxOptions{Timeout: 2 * wk.w.OpTimeout, Labels: map[string]string{"chaos": FTransfer}})
	if err != nil {
		return done(Fail, "", err)
	}
	ok, err := wk.leg(octx, tx, from, -amount, v.Tag)
	if err == nil && !ok {
		rollback(tx)
		return done(Fail, tx.ID(), errInsufficient)
	}
	if err == nil {
		_, err = wk.leg(octx, tx, to, amount, v.Tag)
	}
	if err != nil {
		rollback(tx)
		return done(Fail, tx.ID(), err)
	}
	err = tx.Commit(octx)
	return done(outcome(err), tx.ID(), err)
}

// leg adds delta to an account and logs it under tag; false if the
// balance would go negative.
func (wk *worker) leg(ctx context.Context, tx *client.Tx, account string, delta int64, tag string) (bool, error) {
	part, id := splitAccount(account)
	if part != PartSurreal {
		res, err := tx.Exec(ctx, part, `WITH u AS (UPDATE chaos_bank SET balance = balance + $1 WHERE id = $2 AND balance + $1 >= 0 RETURNING id)
			INSERT INTO chaos_bank_log (uid, account, delta) SELECT $3::text, id, $1 FROM u`, delta, id, tag)
		if err != nil {
			return false, err
		}
		return res.RowsAffected == 1, nil
	}
	res, err := tx.Do(ctx, part, client.Read("chaos_bank", id))
	if err != nil {
		return false, err
	}
	raw, ok := column(res, "balance")
	bal, isNum := toInt64(raw)
	if !ok || !isNum {
		return false, fmt.Errorf("surreal account %s: no balance in %v", id, res.Rows)
	}
	if bal+delta < 0 {
		return false, nil
	}
	if _, err := tx.Do(ctx, part, client.Merge("chaos_bank", id, map[string]any{"balance": bal + delta})); err != nil {
		return false, err
	}
	_, err = tx.Do(ctx, part, client.Create("chaos_bank_log", tag+"-"+id, map[string]any{"uid": tag, "account": id, "delta": delta}))
	return err == nil, err
}

// column returns a named column of a one-row result.
func column(res *client.Result, name string) (any, bool) {
	if res == nil || len(res.Rows) == 0 {
		return nil, false
	}
	for i, c := range res.Columns {
		if c == name && i < len(res.Rows[0]) {
			return res.Rows[0][i], true
		}
	}
	return nil, false
}

func (wk *worker) appendOp(ctx context.Context) error {
	list := wk.w.Lists[wk.rng.IntN(len(wk.w.Lists))]
	parts := []string{PartPG, PartSurreal}
	if wk.rng.IntN(3) == 0 {
		parts = append(parts, PartPGB)
	}
	wk.rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	v := &Value{Tag: wk.tag("e"), Writes: map[string]int{}, List: list}
	for _, p := range parts {
		v.Writes[p] = 1
	}
	op := wk.w.Hist.Invoke(wk.proc, FAppend, v)
	done := func(typ Type, txid string, err error) error {
		wk.w.Hist.Complete(wk.proc, op, FAppend, typ, txid, nil, err)
		return err
	}
	octx, cancel := context.WithTimeout(ctx, wk.w.OpTimeout)
	defer cancel()
	tx, err := wk.cl.Begin(octx, client.TxOptions{Timeout: 2 * wk.w.OpTimeout, Labels: map[string]string{"chaos": FAppend}})
	if err != nil {
		return done(Fail, "", err)
	}
	for _, p := range parts {
		if err = wk.appendTo(octx, tx, p, list, v.Tag); err != nil {
			rollback(tx)
			return done(Fail, tx.ID(), err)
		}
	}
	err = tx.Commit(octx)
	return done(outcome(err), tx.ID(), err)
}

func (wk *worker) appendTo(ctx context.Context, tx *client.Tx, part, list, elem string) error {
	if part != PartSurreal {
		res, err := tx.Exec(ctx, part, "UPDATE chaos_list SET elems = array_append(elems, $1::text) WHERE id = $2", elem, list)
		if err == nil && res.RowsAffected != 1 {
			err = fmt.Errorf("list %s missing in %s", list, part)
		}
		return err
	}
	res, err := tx.Do(ctx, part, client.Read("chaos_list", list))
	if err != nil {
		return err
	}
	raw, ok := column(res, "elems")
	elems, isList := raw.([]any)
	if !ok || (!isList && raw != nil) {
		return fmt.Errorf("surreal list %s: no elems in %v", list, res.Rows)
	}
	_, err = tx.Do(ctx, part, client.Upsert("chaos_list", list, map[string]any{"elems": append(elems, elem)}))
	return err
}

func (wk *worker) idem(ctx context.Context) error {
	parts := []string{PartPG, PartSurreal}
	if wk.rng.IntN(3) == 0 {
		parts = append(parts, PartPGB)
	}
	v := &Value{Tag: wk.tag("k"), Writes: map[string]int{}}
	for _, p := range parts {
		v.Writes[p] = 1
	}
	return wk.runIdem(ctx, v, 1)
}

// runIdem runs the idem operation v (a new history operation) with
// attempts numbered from first, retrying with the same key after every
// unknown outcome or abort, at most RunTries times.
func (wk *worker) runIdem(ctx context.Context, v *Value, first int) error {
	op := wk.w.Hist.Invoke(wk.proc, FIdem, &Value{Tag: v.Tag, Writes: v.Writes})
	final, lastTx := Fail, ""
	var lastErr error
	backoff := 50 * time.Millisecond
	for attempt := first; attempt < first+wk.w.RunTries; attempt++ {
		var steps []client.Step
		for _, p := range sortedKeys(v.Writes) {
			if p == PartSurreal {
				steps = append(steps, client.On(p, client.Create("chaos_idem", fmt.Sprintf("%s-a%d", v.Tag, attempt), map[string]any{"key": v.Tag})))
			} else {
				steps = append(steps, client.On(p, client.SQL("INSERT INTO chaos_idem (key, attempt) VALUES ($1, $2)", v.Tag, attempt)))
			}
		}
		actx, cancel := context.WithTimeout(ctx, wk.w.RunTry)
		r, err := wk.cl.RunTx(actx, client.TxOptions{IdempotencyKey: v.Tag, Timeout: 2 * wk.w.RunTry,
			Labels: map[string]string{"chaos": FIdem}}, steps...)
		cancel()
		a := Attempt{Result: outcome(err)}
		if r != nil {
			a.TxID, a.Replayed = r.TxID, r.Replayed
		}
		if err != nil {
			a.Error = err.Error()
		}
		v.Attempts = append(v.Attempts, a)
		lastTx, lastErr = a.TxID, err
		if a.Result == Unknown {
			final = Unknown
		}
		if a.Result == OK {
			final = OK
			break
		}
		if stuck(err) {
			wk.rotate()
			if derr := wk.dial(ctx); derr != nil {
				break
			}
		}
		if ctx.Err() != nil {
			break // the run is over: what is unknown stays unknown
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff + time.Duration(wk.rng.Int64N(int64(backoff)))):
		}
		backoff = min(2*backoff, time.Second)
	}
	if final == OK {
		lastErr = nil
	}
	wk.w.Hist.Complete(wk.proc, op, FIdem, final, lastTx, v, lastErr)
	return lastErr
}

// RetryUnknownIdem retries, with the same key, every idem operation whose
// outcome stayed unknown, as a client would once the cluster is back. Each
// retry is a new operation with the same tag; together they must leave the
// key's rows exactly once (a committed attempt replays, nothing executes
// twice).
func (w *Workloads) RetryUnknownIdem(ctx context.Context, ops []Operation) (retried int, err error) {
	wk := &worker{w: w, proc: 0, kind: FIdem, rng: rand.New(rand.NewPCG(w.Seed, 0))}
	defer func() {
		if wk.cl != nil {
			wk.cl.Close()
		}
	}()
	for _, o := range ops {
		if o.F != FIdem || o.Type != Unknown {
			continue
		}
		if err := wk.dial(ctx); err != nil {
			return retried, err
		}
		v := &Value{Tag: o.Value.Tag, Writes: o.Value.Writes}
		wk.runIdem(ctx, v, len(o.Value.Attempts)+1)
		retried++
	}
	return retried, nil
}

func accountPart(key string) string {
	p, _ := splitAccount(key)
	return p
}

// Probe runs one small transaction across PostgreSQL and SurrealDB and
// reports whether it committed: the runner's measure of recovery.
func Probe(ctx context.Context, cl *client.Client, n int64) error {
	_, _, err := cl.Run(ctx, client.TxOptions{Timeout: 5 * time.Second, Labels: map[string]string{"chaos": "probe"}},
		client.On(PartPG, client.SQL("UPDATE chaos_probe SET n = $1 WHERE id = 'p'", n)),
		client.On(PartSurreal, client.Upsert("chaos_probe", "p", map[string]any{"n": n})))
	return err
}
