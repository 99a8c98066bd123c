package wal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Every new decision appends one DECISION entry in the same bbolt
// transaction; a repeated or conflicting decision (no new record) and a
// replayed entry (index at or below applied) append nothing; two replicas
// applying the same log in different batchings hold byte-identical trails.
func TestDecisionsAreAuditedDeterministically(t *testing.T) {
	log := []Entry{
		{Index: 1, Term: 2, Data: Command{Type: CmdDecide, Decision: &Record{TxID: "tx1", Outcome: OutcomeCommit,
			Participants: []string{"pg", "surreal"}, DecidedMs: 1_700_000_000_001}}.Encode()},
		{Index: 2, Term: 2, Data: Command{Type: CmdAudit, Audit: &AuditEntry{AtMs: 1_700_000_000_002, Actor: "ops", Action: "MEMBER_ADD", Detail: "n4"}}.Encode()},
		{Index: 3, Term: 2, Data: Command{Type: CmdDecide, Decision: &Record{TxID: "tx2", Outcome: OutcomeAbort,
			Participants: []string{"pg"}, DecidedMs: 1_700_000_000_003, Reason: "prepare failed"}}.Encode()},
		decide(4, "tx1", OutcomeAbort), // conflicts with tx1's COMMIT: no new decision
		{Index: 5, Term: 3, Data: Command{Type: CmdDecide, Decision: &Record{TxID: "tx3", Outcome: OutcomeCommit,
			Participants: []string{"pg"}, DecidedMs: 1_700_000_000_005}}.Encode()},
	}
	a, b := open(t), open(t)
	a.ApplyBatch(log)
	for _, e := range log { // one entry per batch on the other replica
		b.ApplyBatch([]Entry{e})
	}
	b.ApplyBatch(log[:3]) // a replay is skipped by index
	ea, va, err := a.QueryAudit(AuditQuery{})
	if err != nil || !va.OK {
		t.Fatalf("replica a: %v %+v", err, va)
	}
	eb, vb, _ := b.QueryAudit(AuditQuery{})
	if fmt.Sprint(ea) != fmt.Sprint(eb) || va != vb {
		t.Fatalf("replicas differ:\n%+v\n%+v", ea, eb)
	}
	if _, da, _, _ := a.Digest(); true {
		if _, db, _, _ := b.Digest(); da != db {
			t.Fatalf("digests differ: %s %s", da, db)
		}
	}
	want := []string{
		"1 1700000000001 coordinator DECISION tx1 COMMIT [pg,surreal] term 2 index 1 ",
		"2 1700000000002 ops MEMBER_ADD  n4 ",
		"3 1700000000003 coordinator DECISION tx2 ABORT [pg] term 2 index 3 prepare failed",
		"4 1700000000005 coordinator DECISION tx3 COMMIT [pg] term 3 index 5 ",
	}
	if len(ea) != len(want) {
		t.Fatalf("want %d entries, got %+v", len(want), ea)
	}
	for i, e := range ea {
		if got := fmt.Sprintf("%d %d %s %s %s %s %s", e.Seq, e.AtMs, e.Actor, e.Action, e.TxID, e.Detail, e.Reason); got != want[i] {
			t.Errorf("entry %d:\n got %q\nwant %q", i, got, want[i])
		}
	}
	if va.Entries != 4 || va.HeadSeq != 4 || va.HeadHash != ea[3].Hash {
		t.Errorf("verdict: %+v", va)
	}
}

// QueryAudit filters by kind, action and txid and keeps the newest Limit
// matches, oldest first, while verifying the whole chain.
func TestQueryAuditFilters(t *testing.T) {
	s := open(t)
	var batch []Entry
	for i := 1; i <= 20; i++ {
		if i%5 == 0 {
			batch = append(batch, Entry{Index: uint64(i), Data: Command{Type: CmdAudit, Audit: &AuditEntry{AtMs: int64(i), Actor: "ops", Action: "CONFIG_RELOAD", Detail: fmt.Sprint(i)}}.Encode()})
		} else {
			batch = append(batch, decide(uint64(i), fmt.Sprintf("tx%02d", i), OutcomeCommit))
		}
	}
	s.ApplyBatch(batch)
	seqs := func(q AuditQuery) string {
		es, v, err := s.QueryAudit(q)
		if err != nil || !v.OK || v.Entries != 20 {
			t.Fatalf("%+v: %v %+v", q, err, v)
		}
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return fmt.Sprint(out)
	}
	for _, c := range []struct {
		q    AuditQuery
		want string
	}{
		{AuditQuery{Kind: KindOperator}, "[5 10 15 20]"},
		{AuditQuery{Kind: KindOperator, Limit: 3}, "[10 15 20]"},
		{AuditQuery{Kind: KindDecision, Limit: 3}, "[17 18 19]"},
		{AuditQuery{Kind: KindDecision, TxID: "tx07"}, "[7]"},
		{AuditQuery{Action: "CONFIG_RELOAD", Limit: 1}, "[20]"},
		{AuditQuery{Limit: 2}, "[19 20]"},
	} {
		if got := seqs(c.q); got != c.want {
			t.Errorf("%+v: got %s, want %s", c.q, got, c.want)
		}
	}
	// Tampering with a decision entry is detected and named.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var k [8]byte
		k[7] = 7
		v := bytes.Replace(b.Get(k[:]), []byte("COMMIT"), []byte("ABORT"), 1)
		return b.Put(k[:], v)
	}); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := s.QueryAudit(AuditQuery{Kind: KindOperator}); v.OK || v.BrokenAt != 7 {
		t.Fatalf("edited decision entry not detected: %+v", v)
	}
}

// The stored encoding spliced by sealed is exactly json.Marshal of the
// entry with its hash.
func TestSealedEncodingIsJSON(t *testing.T) {
	for _, a := range []AuditEntry{
		{Seq: 9, AtMs: 1, Actor: "a\"b", Action: ActionDecision, TxID: "t<>&", Detail: "d\u2028\u2029x", PrevHash: "p"},
		{Seq: 1, AtMs: -5, Action: "X", Reason: "\x00\x1f\t\n\r\\ é \xff\xfe 日本", PrevHash: ""},
		{Action: ""},
	} {
		checkSealed(t, a)
	}
}

func checkSealed(t *testing.T, a AuditEntry) {
	t.Helper()
	h, stored := a.sealed()
	a.Hash = ""
	plain, _ := json.Marshal(a)
	sum := sha256.Sum256(append([]byte(a.PrevHash), plain...))
	if h != hex.EncodeToString(sum[:]) {
		t.Fatalf("hash differs from sha256(prev ‖ json.Marshal) for %+v", a)
	}
	a.Hash = h
	want, _ := json.Marshal(a)
	if !bytes.Equal(stored, want) {
		t.Fatalf("sealed:\n%s\njson:\n%s", stored, want)
	}
}

// FuzzSealedEncoding: the hand encoding equals json.Marshal for any text.
func FuzzSealedEncoding(f *testing.F) {
	f.Add(uint64(1), int64(2), "ops", "RESOLVE", "tx", "d<>&\u2028", "r\x00\xff", "prev")
	f.Fuzz(func(t *testing.T, seq uint64, at int64, actor, action, txid, detail, reason, prev string) {
		checkSealed(t, AuditEntry{Seq: seq, AtMs: at, Actor: actor, Action: action, TxID: txid, Detail: detail, Reason: reason, PrevHash: prev})
	})
}

// Pruning deletes the oldest entries, keeps the last one's hash as the
// anchor and appends an AUDIT_PRUNE entry; the retained chain still
// verifies (from the anchor), on every replica identically, even when
// everything before it was pruned; a retained entry deleted is detected.
func TestAuditPruneKeepsAnAnchor(t *testing.T) {
	a, b := open(t), open(t)
	var log []Entry
	for i := 1; i <= 10; i++ {
		log = append(log, Entry{Index: uint64(i), Data: Command{Type: CmdDecide, Decision: &Record{TxID: fmt.Sprintf("tx%02d", i),
			Outcome: OutcomeCommit, Participants: []string{"pg"}, DecidedMs: int64(i * 1000)}}.Encode()})
	}
	log = append(log, Entry{Index: 11, Data: Command{Type: CmdAuditPrune, AuditBefore: 7, AtMs: 50_000}.Encode()})
	a.ApplyBatch(log)
	for _, e := range log {
		b.ApplyBatch([]Entry{e})
	}
	if p, _ := a.AuditPrunePoint(9500, 100); p != 10 {
		t.Errorf("AuditPrunePoint: entries 7-9 are older than 9500 ms: got %d, want 10", p)
	}
	if p, _ := a.AuditPrunePoint(9500, 2); p != 9 {
		t.Errorf("AuditPrunePoint looking at 2 entries: got %d, want 9", p)
	}
	ea, va, _ := a.QueryAudit(AuditQuery{})
	eb, vb, _ := b.QueryAudit(AuditQuery{})
	if fmt.Sprint(ea) != fmt.Sprint(eb) || va != vb {
		t.Fatalf("replicas differ after pruning:\n%+v\n%+v", va, vb)
	}
	if !va.OK || va.Entries != 5 || va.AnchorSeq != 6 || ea[0].Seq != 7 || ea[0].PrevHash != va.AnchorHash {
		t.Fatalf("after pruning 1..6: %+v %+v", va, ea)
	}
	last := ea[len(ea)-1]
	if last.Action != ActionAuditPrune || last.Seq != 11 || !strings.Contains(last.Detail, "pruned entries 1..6") || last.AtMs != 50_000 {
		t.Fatalf("prune entry: %+v", last)
	}
	// Prune everything: the next entry continues from the anchor.
	a.ApplyBatch([]Entry{{Index: 12, Data: Command{Type: CmdAuditPrune, AuditBefore: 100, AtMs: 60_000}.Encode()}})
	a.ApplyBatch([]Entry{decide(13, "tx99", OutcomeAbort)})
	es, v, _ := a.QueryAudit(AuditQuery{})
	if !v.OK || v.AnchorSeq != 11 || len(es) != 2 || es[0].Seq != 12 || es[0].Action != ActionAuditPrune || es[1].Seq != 13 {
		t.Fatalf("after pruning everything: %+v %+v", v, es)
	}
	// A retained entry deleted behind the store's back is named.
	if err := a.db.Update(func(tx *bolt.Tx) error {
		var k [8]byte
		k[7] = 12
		return tx.Bucket(bucketAudit).Delete(k[:])
	}); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := a.QueryAudit(AuditQuery{}); v.OK || v.BrokenAt != 13 || !strings.Contains(v.Problem, "entry 12 is missing") {
		t.Fatalf("deleted entry not detected: %+v", v)
	}
}
