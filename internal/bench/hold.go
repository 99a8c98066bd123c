package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txcoord/txcoord/client"
)

// HoldResult is the memory measurement with many transactions held open.
type HoldResult struct {
	// Held transactions were begun and not committed; each staged one
	// SurrealDB write when Op says so.
	Held int    `json:"held"`
	Op   string `json:"op"`
	// Leader's resident set before, with every transaction held, and its
	// high-water mark (VmHWM) over the process's life.
	LeaderRSSIdleMiB float64 `json:"leader_rss_idle_mib"`
	LeaderRSSHeldMiB float64 `json:"leader_rss_held_mib"`
	LeaderHWMMiB     float64 `json:"leader_hwm_mib"`
	// PerTxKiB: (held - idle) / Held.
	PerTxKiB float64 `json:"per_tx_kib"`
	// Rejected: one more Begin failed with the active-transaction limit;
	// RejectError is what the client saw.
	Rejected    bool    `json:"rejected"`
	RejectError string  `json:"reject_error"`
	BeginSec    float64 `json:"begin_s"`
	RollbackSec float64 `json:"rollback_s"`
}

// holdConcurrency is how many Begins run at once while filling.
const holdConcurrency = 32

// hold begins n transactions (the cluster's max_active is n), measures the
// leader's memory, checks that the next Begin is refused, and rolls them all
// back.
func hold(ctx context.Context, e *env, n int, pids []int, leader int, say func(string, ...any)) (*HoldResult, error) {
	h := &HoldResult{Held: n, Op: "begin"}
	surreal := e.cfg.Stores.SurrealURL != ""
	if surreal {
		h.Op = "begin + one staged SurrealDB merge"
	}
	pid := 0
	if leader >= 0 && leader < len(pids) {
		pid = pids[leader]
	}
	const mib = 1 << 20
	if pid != 0 {
		r, _ := procRSS(pid)
		h.LeaderRSSIdleMiB = float64(r) / mib
	}
	say("hold: beginning %d transactions (%s), %d at a time", n, h.Op, holdConcurrency)
	txs := make([]*client.Tx, n)
	var next atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	t0 := time.Now()
	var wg sync.WaitGroup
	for range holdConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				tx, err := e.c.Begin(ctx, client.TxOptions{Timeout: 10 * time.Minute})
				if err == nil && surreal {
					txs[i] = tx
					_, err = tx.Do(ctx, e.cfg.Surreal, client.Merge(surrealTable, int64(i%e.cfg.Accounts), map[string]any{"held": int64(i)}))
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("transaction %d: %w", i, err)
					}
					errMu.Unlock()
					return
				}
				txs[i] = tx
			}
		}()
	}
	wg.Wait()
	h.BeginSec = time.Since(t0).Seconds()
	defer func() {
		t1 := time.Now()
		rollbackAll(txs)
		h.RollbackSec = time.Since(t1).Seconds()
		say("hold: rolled back in %.1fs", h.RollbackSec)
	}()
	if firstErr != nil {
		return h, firstErr
	}
	if pid != 0 {
		r, _ := procRSS(pid)
		h.LeaderRSSHeldMiB = float64(r) / mib
		h.LeaderHWMMiB = float64(procHWM(pid)) / mib
		h.PerTxKiB = (h.LeaderRSSHeldMiB - h.LeaderRSSIdleMiB) * 1024 / float64(n)
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tx, err := e.c.Begin(bctx, client.TxOptions{Timeout: time.Minute})
	cancel()
	switch {
	case err == nil:
		tx.Rollback(ctx) //nolint:errcheck // best effort
		h.RejectError = "none: Begin number " + strconv.Itoa(n+1) + " was accepted"
	case errors.Is(err, client.ErrLimit):
		h.Rejected, h.RejectError = true, err.Error()
	default:
		h.RejectError = "unexpected: " + err.Error()
	}
	say("hold: %d held: leader RSS %.0f MiB (idle %.0f MiB, %.1f KiB per transaction, high-water %.0f MiB); next Begin: %s",
		n, h.LeaderRSSHeldMiB, h.LeaderRSSIdleMiB, h.PerTxKiB, h.LeaderHWMMiB, h.RejectError)
	return h, nil
}

func rollbackAll(txs []*client.Tx) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range holdConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(txs) {
					return
				}
				if txs[i] != nil {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					txs[i].Rollback(ctx) //nolint:errcheck // the timeout rolls back what this misses
					cancel()
				}
			}
		}()
	}
	wg.Wait()
}

// procHWM returns a process's peak resident set (VmHWM) in bytes, 0 if unknown.
func procHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
