package chaos

import (
	"fmt"
	"sort"
	"strings"
)

// Anomaly kinds. Each names a property the run must keep.
const (
	// Atomicity: a transaction's writes are in all its stores or in none.
	APartial = "partial-commit"
	// Durability of acknowledged commits: an ok operation's writes exist.
	ALostCommit = "lost-commit"
	// Nothing both committed and aborted: a failed operation left writes.
	AFailedVisible = "failed-but-visible"
	// Exactly once: a write applied twice (an idempotent retry, a replayed commit).
	ADuplicate = "duplicate-write"
	// A write no recorded operation made.
	AUnexpected = "unexpected-write"
	// The coordinator's answer (GetTransaction) contradicts the history or the data.
	AStatus = "status-contradiction"
	// Bank invariants.
	ANegative     = "negative-balance"
	ATotal        = "total-not-conserved"
	ABalanceDrift = "balance-mismatch" // balance != initial + sum of its logged deltas (lost update)
	AMissing      = "missing-account"
	AExtraAccount = "unexpected-account"
	// Two stores ordered the same committed appends differently.
	AListOrder = "list-order-mismatch"
	// Decision stores of the nodes differ at the same applied index, or never
	// reach the same index.
	AStoresDiffer       = "decision-stores-differ"
	AStoresNotConverged = "decision-stores-not-converged"
	// The cluster did not commit again within the bound after a fault healed.
	ANoRecovery = "no-recovery"
	// A coordinator process died without being told to (not a failpoint).
	ACrash = "coordinator-crash"
)

// Anomaly is one violation found by a checker.
type Anomaly struct {
	Kind   string `json:"kind"`
	Op     int64  `json:"op,omitempty"`
	TxID   string `json:"txid,omitempty"`
	Detail string `json:"detail"`
}

func (a Anomaly) String() string {
	s := a.Kind
	if a.Op != 0 {
		s += fmt.Sprintf(" op=%d", a.Op)
	}
	if a.TxID != "" {
		s += " txid=" + a.TxID
	}
	return s + ": " + a.Detail
}

// Observed is the final state of the stores, read after heal and recovery.
type Observed struct {
	// Tags: participant → tag → rows carrying it (transfer log rows, list
	// elements, idempotency rows).
	Tags map[string]map[string]int
	// Balances: account key (participant/id) → balance.
	Balances map[string]int64
	// LogSums: account key → sum of the deltas logged for it.
	LogSums map[string]int64
	// Lists: list id → participant → elements in list order.
	Lists map[string]map[string][]string
}

// BankSpec is the bank's initial state.
type BankSpec struct {
	Accounts []string // account keys: participant/id
	Initial  int64    // every account's opening balance
}

// CheckTags checks every operation's tagged writes against the history:
// atomicity across stores, acknowledged commits present, failed ones absent,
// nothing applied twice, nothing written by no one, and the coordinator's
// final answer (Operation.Status) consistent with both.
func CheckTags(ops []Operation, obs Observed) []Anomaly {
	var out []Anomaly
	byTag := map[string]bool{}
	// An idem operation left unknown is retried with its tag (and key) by a
	// new operation (RetryUnknownIdem): the tag's rows then belong to
	// whichever of them committed. committed counts, per tag, the
	// operations that committed (acknowledged, or resolved COMMITTED).
	committed := map[string]int{}
	for _, o := range ops {
		if o.Value.Tag != "" && (o.Type == OK || o.Status == OutcomeCommitted) {
			committed[o.Value.Tag]++
		}
	}
	for _, o := range ops {
		if o.Value.Tag == "" || len(o.Value.Writes) == 0 {
			continue
		}
		byTag[o.Value.Tag] = true
		txid := o.TxID
		if txid == "" {
			if ids := o.TxIDs(); len(ids) > 0 {
				txid = ids[len(ids)-1]
			}
		}
		add := func(kind, format string, args ...any) {
			out = append(out, Anomaly{Kind: kind, Op: o.ID, TxID: txid, Detail: fmt.Sprintf(format, args...)})
		}
		var present, full, dup []string
		parts := sortedKeys(o.Value.Writes)
		for _, p := range parts {
			want := o.Value.Writes[p]
			got := obs.Tags[p][o.Value.Tag]
			switch {
			case got > want:
				dup = append(dup, fmt.Sprintf("%s has %d rows, want %d", p, got, want))
				present = append(present, p)
			case got == want:
				full = append(full, p)
				present = append(present, p)
			case got > 0:
				present = append(present, p)
			}
		}
		if len(dup) > 0 {
			add(ADuplicate, "%s %s (%s): %s", o.F, o.Value.Tag, o.Type, strings.Join(dup, "; "))
		}
		visible := len(present) > 0
		if visible && len(full) != len(parts) && len(dup) == 0 {
			add(APartial, "%s %s (%s): complete in [%s], present in [%s], expected in [%s]", o.F, o.Value.Tag, o.Type,
				strings.Join(full, " "), strings.Join(present, " "), strings.Join(parts, " "))
		}
		switch o.Type {
		case OK:
			if !visible {
				add(ALostCommit, "%s %s acknowledged ok but absent from [%s]", o.F, o.Value.Tag, strings.Join(parts, " "))
			}
		case Fail:
			if visible {
				add(AFailedVisible, "%s %s failed (%s) but its writes are in [%s]", o.F, o.Value.Tag, o.Error, strings.Join(present, " "))
			}
		}
		switch o.Status {
		case OutcomeCommitted:
			if o.Type == Fail {
				add(AStatus, "%s %s failed (%s) but the coordinator says COMMITTED", o.F, o.Value.Tag, o.Error)
			} else if !visible {
				add(AStatus, "%s %s: the coordinator says COMMITTED but the writes are absent", o.F, o.Value.Tag)
			}
		case OutcomeAborted:
			if o.Type == OK {
				add(AStatus, "%s %s acknowledged ok but the coordinator says ABORTED", o.F, o.Value.Tag)
			} else if visible && committed[o.Value.Tag] == 0 {
				// (Another operation with the tag committed: the rows are its.)
				add(AStatus, "%s %s: the coordinator says ABORTED but the writes are in [%s]", o.F, o.Value.Tag, strings.Join(present, " "))
			}
		}
	}
	for _, p := range sortedKeys(obs.Tags) {
		for _, tag := range sortedKeys(obs.Tags[p]) {
			if !byTag[tag] && obs.Tags[p][tag] > 0 {
				out = append(out, Anomaly{Kind: AUnexpected, Detail: fmt.Sprintf("%s holds %d rows tagged %s, which no operation wrote", p, obs.Tags[p][tag], tag)})
			}
		}
	}
	return out
}

// CheckBank checks the bank invariants: every account present and no
// other, no negative balance, the total conserved, and every balance equal
// to its opening balance plus the deltas logged with it (a lost update or a
// half-applied branch breaks that even when the total holds).
func CheckBank(spec BankSpec, obs Observed) []Anomaly {
	var out []Anomaly
	want := map[string]bool{}
	var total int64
	for _, a := range spec.Accounts {
		want[a] = true
		bal, ok := obs.Balances[a]
		if !ok {
			out = append(out, Anomaly{Kind: AMissing, Detail: fmt.Sprintf("account %s is missing", a)})
			continue
		}
		total += bal
		if bal < 0 {
			out = append(out, Anomaly{Kind: ANegative, Detail: fmt.Sprintf("account %s has balance %d", a, bal)})
		}
		if exp := spec.Initial + obs.LogSums[a]; bal != exp {
			out = append(out, Anomaly{Kind: ABalanceDrift, Detail: fmt.Sprintf("account %s has balance %d; opening %d plus logged deltas %d is %d",
				a, bal, spec.Initial, obs.LogSums[a], exp)})
		}
	}
	for _, a := range sortedKeys(obs.Balances) {
		if !want[a] {
			out = append(out, Anomaly{Kind: AExtraAccount, Detail: fmt.Sprintf("account %s was never opened (balance %d)", a, obs.Balances[a])})
		}
	}
	if exp := spec.Initial * int64(len(spec.Accounts)); total != exp {
		out = append(out, Anomaly{Kind: ATotal, Detail: fmt.Sprintf("total %d, want %d", total, exp)})
	}
	return out
}

// CheckListOrder checks that every list holds the elements it shares with
// the same list in another store in the same order: appends are serialized
// by each store's locks, and a transaction commits in all or none, so two
// stores must agree on the order of committed appends.
func CheckListOrder(obs Observed) []Anomaly {
	var out []Anomaly
	for _, list := range sortedKeys(obs.Lists) {
		byPart := obs.Lists[list]
		parts := sortedKeys(byPart)
		for i := 0; i < len(parts); i++ {
			for j := i + 1; j < len(parts); j++ {
				a, b := byPart[parts[i]], byPart[parts[j]]
				inB := map[string]bool{}
				for _, e := range b {
					inB[e] = true
				}
				inA := map[string]bool{}
				for _, e := range a {
					inA[e] = true
				}
				var ca, cb []string
				for _, e := range a {
					if inB[e] {
						ca = append(ca, e)
					}
				}
				for _, e := range b {
					if inA[e] {
						cb = append(cb, e)
					}
				}
				for k := range ca {
					if k < len(cb) && ca[k] != cb[k] {
						out = append(out, Anomaly{Kind: AListOrder, Detail: fmt.Sprintf("list %s: %s and %s disagree at common position %d (%s vs %s)",
							list, parts[i], parts[j], k, ca[k], cb[k])})
						break
					}
				}
			}
		}
	}
	return out
}

// Digest is one node's decision-store digest.
type Digest struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied_index"`
	SHA256  string `json:"sha256"`
	Records uint64 `json:"records"`
	Err     string `json:"error,omitempty"`
}

// CheckDigests checks that every node's decision store is identical at the
// same applied index. Digests taken at different indexes mean the stores
// never converged within the bound.
func CheckDigests(ds []Digest) []Anomaly {
	if len(ds) == 0 {
		return []Anomaly{{Kind: AStoresNotConverged, Detail: "no digest could be read"}}
	}
	var desc []string
	sameIndex, sameSum := true, true
	for _, d := range ds {
		desc = append(desc, fmt.Sprintf("%s@%d=%.12s(%d records)%s", d.Node, d.Applied, d.SHA256, d.Records, errSuffix(d.Err)))
		if d.Err != "" || d.Applied != ds[0].Applied {
			sameIndex = false
		}
		if d.SHA256 != ds[0].SHA256 {
			sameSum = false
		}
	}
	switch {
	case !sameIndex:
		return []Anomaly{{Kind: AStoresNotConverged, Detail: strings.Join(desc, " ")}}
	case !sameSum:
		return []Anomaly{{Kind: AStoresDiffer, Detail: strings.Join(desc, " ")}}
	}
	return nil
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " error: " + e
}

// InDoubt counts what is left unresolved after recovery.
type InDoubt struct {
	PGPrepared     int `json:"pg_prepared"`     // our GIDs in pg_prepared_xacts
	SurrealIntents int `json:"surreal_intents"` // our intents in SurrealDB
	SurrealLocks   int `json:"surreal_locks"`   // our locks in SurrealDB
	LogNotDone     int `json:"log_not_done"`    // decisions never finished (COMMITTING/ABORTING)
	Unreadable     int `json:"unreadable"`      // stores that could not be read (counted as in doubt)
	// Samples name a few of what is left (GIDs, txids).
	Samples []string `json:"samples,omitempty"`
}

// Total is the in_doubt_left of the summary line.
func (d InDoubt) Total() int {
	return d.PGPrepared + d.SurrealIntents + d.SurrealLocks + d.LogNotDone + d.Unreadable
}

// CountAnomalies groups anomalies by kind.
func CountAnomalies(as []Anomaly) map[string]int {
	out := map[string]int{}
	for _, a := range as {
		out[a.Kind]++
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
