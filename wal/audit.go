package wal

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// ActionDecision is the action of the audit entry every logged decision
// (CmdDecide) appends. Every other action is an operator or security
// event (RESOLVE, MEMBER_ADD, CONFIG_RELOAD, AUTHZ_DENIED...).
const ActionDecision = "DECISION"

// ActorCoordinator is the actor of decision entries.
const ActorCoordinator = "coordinator"

// Audit kinds, for AuditQuery.Kind.
const (
	KindAll      = ""
	KindDecision = "decision" // entries with ActionDecision
	KindOperator = "operator" // every other entry
)

// AuditEntry is one entry of the hash-chained audit trail. Apply assigns
// Seq, PrevHash and Hash, so every replica computes the same chain.
type AuditEntry struct {
	Seq      uint64 `json:"seq"`
	AtMs     int64  `json:"at"`
	Actor    string `json:"actor,omitempty"`
	Action   string `json:"action"`
	TxID     string `json:"txid,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Reason   string `json:"reason,omitempty"`
	PrevHash string `json:"prev"`
	Hash     string `json:"hash"`
}

// Kind is KindDecision or KindOperator.
func (a AuditEntry) Kind() string {
	if a.Action == ActionDecision {
		return KindDecision
	}
	return KindOperator
}

// ComputeHash is the entry's hash: sha256 over the previous hash and the
// entry's fields (Hash itself excluded), so editing any stored entry breaks
// the chain from there on.
func (a AuditEntry) ComputeHash() string {
	h, _ := a.sealed()
	return h
}

// sealed returns the entry's hash and its stored encoding (JSON with the
// hash filled in). Both are byte for byte what json.Marshal gives (the hash
// covers json.Marshal of the entry with an empty Hash, which is how
// verification recomputes it), but encoded by hand: a decision appends one
// entry, so this runs once per decision in the FSM (TestSealedEncodingIsJSON
// and FuzzSealedEncoding hold the two encodings equal).
func (a AuditEntry) sealed() (hash string, stored []byte) {
	b := make([]byte, 0, 192+len(a.Actor)+len(a.TxID)+len(a.Detail)+len(a.Reason)+len(a.PrevHash)+64)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, a.Seq, 10)
	b = append(b, `,"at":`...)
	b = strconv.AppendInt(b, a.AtMs, 10)
	if a.Actor != "" {
		b = appendJSONString(append(b, `,"actor":`...), a.Actor)
	}
	b = appendJSONString(append(b, `,"action":`...), a.Action)
	if a.TxID != "" {
		b = appendJSONString(append(b, `,"txid":`...), a.TxID)
	}
	if a.Detail != "" {
		b = appendJSONString(append(b, `,"detail":`...), a.Detail)
	}
	if a.Reason != "" {
		b = appendJSONString(append(b, `,"reason":`...), a.Reason)
	}
	b = appendJSONString(append(b, `,"prev":`...), a.PrevHash)
	b = append(b, `,"hash":`...)
	open := len(b)
	b = append(b, `""}`...)
	h := sha256.New()
	h.Write([]byte(a.PrevHash))
	h.Write(b)
	var sum [sha256.Size]byte
	hash = hex.EncodeToString(h.Sum(sum[:0]))
	// Splice the digest into the empty hash field (hex needs no escaping).
	stored = append(b[:open+1], hash...)
	stored = append(stored, '"', '}')
	return hash, stored
}

// appendJSONString appends s as encoding/json writes a string: quotes,
// backslash escapes for '"' '\\' '\b' '\f' '\n' '\r' '\t' (as Go 1.22+ does),
// \u00XX for other control
// characters and for '<' '>' '&' (HTML-safe), \u2028 and \u2029, and
// \ufffd for invalid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decisionAudit is the audit entry of a logged decision. Everything in it
// comes from the applied record (the leader's decision time, the entry's
// term and index), so every replica appends the same bytes.
func decisionAudit(r *Record) AuditEntry {
	d := make([]byte, 0, 64)
	d = append(d, r.Outcome.String()...)
	d = append(d, " ["...)
	for i, p := range r.Participants {
		if i > 0 {
			d = append(d, ',')
		}
		d = append(d, p...)
	}
	d = append(d, "] term "...)
	d = strconv.AppendUint(d, r.Term, 10)
	d = append(d, " index "...)
	d = strconv.AppendUint(d, r.Index, 10)
	return AuditEntry{AtMs: r.DecidedMs, Actor: ActorCoordinator, Action: ActionDecision, TxID: r.TxID,
		Detail: string(d), Reason: r.Reason}
}

// auditChain appends to the audit bucket within one bbolt transaction,
// remembering the tail so that a batch of decisions reads it once.
type auditChain struct {
	tx     *bolt.Tx
	b      *bolt.Bucket
	loaded bool
	seq    uint64
	hash   string
}

func (c *auditChain) append(a AuditEntry) {
	if !c.loaded {
		// A store restored from a file written before the trail existed
		// has no bucket yet: create it, as Open does.
		b, err := c.tx.CreateBucketIfNotExists(bucketAudit)
		must(err, "create audit bucket")
		c.b = b
		if k, v := c.b.Cursor().Last(); k != nil {
			var last struct {
				Seq  uint64 `json:"seq"`
				Hash string `json:"hash"`
			}
			must(json.Unmarshal(v, &last), "decode audit tail")
			c.seq, c.hash = last.Seq, last.Hash
		} else if m := c.tx.Bucket(bucketMeta); m != nil {
			// Empty: nothing yet, or everything pruned (continue from the anchor).
			a := readAnchor(m)
			c.seq, c.hash = a.Seq, a.Hash
		}
		c.loaded = true
	}
	a.Seq, a.PrevHash = c.seq+1, c.hash
	hash, stored := a.sealed()
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], a.Seq)
	must(c.b.Put(k[:], stored), "put audit")
	c.seq, c.hash = a.Seq, hash
}

// ActionAuditPrune is the entry CmdAuditPrune appends.
const ActionAuditPrune = "AUDIT_PRUNE"

// maxPrunePerEntry bounds the entries one CmdAuditPrune deletes (one bbolt
// transaction's work); the leader sends more when more are due.
const maxPrunePerEntry = 4096

// keyAuditAnchor (meta bucket) holds the seq and hash of the last pruned
// entry: the retained chain links to it.
var keyAuditAnchor = []byte("audit_anchor")

type auditAnchor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func readAnchor(meta *bolt.Bucket) auditAnchor {
	var a auditAnchor
	if v := meta.Get(keyAuditAnchor); v != nil {
		must(json.Unmarshal(v, &a), "decode audit anchor")
	}
	return a
}

// prune applies CmdAuditPrune: deletes entries below cmd.AuditBefore (at
// most maxPrunePerEntry, oldest first), records the anchor and appends an
// AUDIT_PRUNE entry with the leader's time. Deterministic: what is deleted
// depends only on the store and the command.
func (c *auditChain) prune(meta *bolt.Bucket, cmd Command) ApplyResult {
	if cmd.AuditBefore == 0 {
		return ApplyResult{Err: fmt.Errorf("audit prune: no seq given")}
	}
	b, err := c.tx.CreateBucketIfNotExists(bucketAudit)
	must(err, "create audit bucket")
	var last []byte
	var first uint64
	n := 0
	cur := b.Cursor()
	for k, v := cur.First(); k != nil && n < maxPrunePerEntry; k, v = cur.Next() {
		if binary.BigEndian.Uint64(k) >= cmd.AuditBefore {
			break
		}
		if n == 0 {
			first = binary.BigEndian.Uint64(k)
		}
		last = append(last[:0], v...)
		n++
	}
	if n == 0 {
		return ApplyResult{}
	}
	var tail struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	must(json.Unmarshal(last, &tail), "decode pruned audit entry")
	var k [8]byte
	for seq := first; seq <= tail.Seq; seq++ {
		binary.BigEndian.PutUint64(k[:], seq)
		must(b.Delete(k[:]), "prune audit entry")
	}
	anchor, err := json.Marshal(auditAnchor{Seq: tail.Seq, Hash: tail.Hash})
	must(err, "encode audit anchor")
	must(meta.Put(keyAuditAnchor, anchor), "put audit anchor")
	c.append(AuditEntry{AtMs: cmd.AtMs, Actor: ActorCoordinator, Action: ActionAuditPrune,
		Detail: "pruned entries " + strconv.FormatUint(first, 10) + ".." + strconv.FormatUint(tail.Seq, 10) +
			" (audit retention); the chain continues from seq " + strconv.FormatUint(tail.Seq, 10) + " hash " + tail.Hash})
	return ApplyResult{}
}

// AuditPrunePoint returns the seq below which entries are older than
// beforeMs, looking at the oldest max entries at most (0: none due). Entry
// times are the leader's, so the scan stops at the first entry not older.
func (s *Store) AuditPrunePoint(beforeMs int64, max int) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var before uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		n := 0
		for k, v := cur.First(); k != nil && n < max; k, v = cur.Next() {
			var e struct {
				AtMs int64 `json:"at"`
			}
			if err := json.Unmarshal(v, &e); err != nil || e.AtMs >= beforeMs {
				return nil
			}
			before = binary.BigEndian.Uint64(k) + 1
			n++
		}
		return nil
	})
	return before, err
}

// AuditQuery selects audit entries. Empty fields match everything.
type AuditQuery struct {
	Kind   string // KindAll, KindDecision or KindOperator
	Action string
	TxID   string
	Seq    uint64 // only this entry (0: any)
	// Limit keeps only the newest Limit matching entries (0: all).
	Limit int
}

func (q AuditQuery) matches(a *AuditEntry) bool {
	return (q.Kind == KindAll || a.Kind() == q.Kind) && (q.Action == "" || a.Action == q.Action) && (q.TxID == "" || a.TxID == q.TxID) &&
		(q.Seq == 0 || a.Seq == q.Seq)
}

// AuditVerdict is the result of verifying the whole chain.
type AuditVerdict struct {
	OK bool
	// BrokenAt is the first entry whose hash or link does not match, and
	// Problem says which.
	BrokenAt uint64
	Problem  string
	// Entries in the trail, and its newest entry.
	Entries  uint64
	HeadSeq  uint64
	HeadHash string
	// Anchor: the last pruned entry (seq 0: nothing pruned); the first
	// retained entry must link to its hash.
	AnchorSeq  uint64
	AnchorHash string
}

// QueryAudit verifies the whole hash chain and returns the entries q
// selects, oldest first. Memory is bounded by q.Limit (the chain is
// verified entry by entry, not held); with Limit 0 every match is returned.
func (s *Store) QueryAudit(q AuditQuery) ([]AuditEntry, AuditVerdict, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := AuditVerdict{OK: true}
	var out []AuditEntry // a ring of the newest q.Limit matches when Limit > 0
	next := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		anchor := readAnchor(tx.Bucket(bucketMeta))
		v.AnchorSeq, v.AnchorHash = anchor.Seq, anchor.Hash
		prev, want := anchor.Hash, anchor.Seq+1
		return b.ForEach(func(k, raw []byte) error {
			v.Entries++
			if seq := binary.BigEndian.Uint64(k); v.OK && seq != want {
				v.OK, v.BrokenAt, v.Problem = false, seq, fmt.Sprintf("entry %d is missing (deleted?)", want)
			}
			want = binary.BigEndian.Uint64(k) + 1
			var a AuditEntry
			if jerr := json.Unmarshal(raw, &a); jerr != nil {
				if v.OK {
					v.OK, v.BrokenAt, v.Problem = false, binary.BigEndian.Uint64(k), "undecodable entry"
				}
				return nil
			}
			if v.OK && a.PrevHash != prev {
				v.OK, v.BrokenAt, v.Problem = false, a.Seq, "link to the previous entry does not match"
			} else if v.OK && a.ComputeHash() != a.Hash {
				v.OK, v.BrokenAt, v.Problem = false, a.Seq, "entry content does not match its hash (edited?)"
			}
			prev = a.Hash
			v.HeadSeq, v.HeadHash = a.Seq, a.Hash
			if !q.matches(&a) {
				return nil
			}
			if q.Limit > 0 && len(out) == q.Limit {
				out[next] = a
				next = (next + 1) % q.Limit
				return nil
			}
			out = append(out, a)
			return nil
		})
	})
	if next > 0 { // unroll the ring: oldest first
		out = append(out[next:], out[:next]...)
	}
	return out, v, err
}

// Audit returns the audit trail, oldest first (the newest limit entries if
// limit > 0), and verifies its hash chain over the whole trail: ok is false
// at the first entry whose hash or link does not match (brokenAt, problem).
func (s *Store) Audit(limit int) (entries []AuditEntry, ok bool, brokenAt uint64, problem string, err error) {
	entries, v, err := s.QueryAudit(AuditQuery{Limit: limit})
	return entries, v.OK, v.BrokenAt, v.Problem, err
}
