package coordinator

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"
	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/wal"
)

// batchSink records raft's "raft.fsm.applyBatchNum" samples: the number
// of entries in each batch the FSM is handed (group commit: one bbolt
// transaction per batch), on every node of the process.
type batchSink struct {
	metrics.BlackholeSink
	batches, entries atomic.Int64
}

func (s *batchSink) AddSample(key []string, val float32) {
	if len(key) >= 3 && key[len(key)-3] == "raft" && key[len(key)-2] == "fsm" && key[len(key)-1] == "applyBatchNum" {
		s.batches.Add(1)
		s.entries.Add(int64(val))
	}
}

func (s *batchSink) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	s.AddSample(key, val)
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGroupCommit: commit decisions through a 3-node Raft cluster as
// OpenRaft builds it (TCP on loopback, raft-boltdb log stores and bbolt
// decision stores on disk, both fsyncing), from c concurrent callers, as
// the coordinator's applyDecision does. It reports decisions/s, the mean
// number of entries per FSM batch on the leader (1 means no group commit)
// and the CPU of the whole process (all three nodes) per decision. The last
// case sends the same number of decisions in flight as c=32, eight to an
// entry, as the coordinator's flights do.
func BenchmarkGroupCommit(b *testing.B) {
	sink := &batchSink{}
	cfg := metrics.DefaultConfig("bench")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics = false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		b.Fatal(err)
	}
	defer metrics.NewGlobal(cfg, &metrics.BlackholeSink{}) //nolint:errcheck // restore a no-op sink
	for _, c := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) { benchGroupCommit(b, c, 1, sink) })
	}
	// The same 32 decisions in flight, as 4 entries of 8 (CmdDecideMany, as
	// a flight sends them) instead of 32 entries of one.
	b.Run("c=4/decisions-per-entry=8", func(b *testing.B) { benchGroupCommit(b, 4, 8, sink) })
}

// benchGroupCommit: conc callers, each appending entries of perEntry
// decisions (CmdDecide when 1, CmdDecideMany otherwise) until b.N decisions.
func benchGroupCommit(b *testing.B, conc, perEntry int, sink *batchSink) {
	dir := b.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var peers []raft.Server
	for i := range 3 {
		peers = append(peers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i+1)), Address: raft.ServerAddress(freeAddr(b)), Suffrage: raft.Voter})
	}
	var nodes []*RaftNode
	for _, p := range peers {
		rn, err := OpenRaft(RaftConfig{NodeID: string(p.ID), BindAddr: string(p.Address), DataDir: filepath.Join(dir, string(p.ID)),
			Bootstrap: true, Peers: peers, HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond}, logger)
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, rn)
	}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	var leader *RaftNode
	for deadline := time.Now().Add(20 * time.Second); leader == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, n := range nodes {
			if n.Raft.State() == raft.Leader {
				leader = n
			}
		}
	}
	if leader == nil {
		b.Fatal("no leader")
	}
	if err := leader.Raft.Barrier(10 * time.Second).Error(); err != nil {
		b.Fatal(err)
	}
	batches0, entries0 := sink.batches.Load(), sink.entries.Load()
	var next atomic.Int64
	cpu0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				last := next.Add(int64(perEntry))
				if last-int64(perEntry) >= int64(b.N) {
					return
				}
				recs := make([]*wal.Record, perEntry)
				for j := range recs {
					recs[j] = &wal.Record{TxID: fmt.Sprintf("%012x%08x", time.Now().UnixMilli(), last-int64(j)), Outcome: wal.OutcomeCommit,
						Participants: []string{"pg-a", "pg-b"}, CreatedMs: 1, DecidedMs: 2}
				}
				cmd := wal.Command{Type: wal.CmdDecide, Decision: recs[0]}
				if perEntry > 1 {
					cmd = wal.Command{Type: wal.CmdDecideMany, Decisions: recs}
				}
				f := leader.Raft.Apply(cmd.Encode(), 10*time.Second)
				if err := f.Error(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	if n := sink.batches.Load() - batches0; n > 0 {
		b.ReportMetric(float64(sink.entries.Load()-entries0)/float64(n), "entries/batch")
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/decision")
}
