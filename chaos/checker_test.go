package chaos

import (
	"errors"
	"testing"
)

// planted builds a history and a final state that are consistent, then lets
// each case break one thing and asserts the checkers find exactly that.
type planted struct {
	h   *History
	obs Observed
}

func newPlanted() *planted {
	return &planted{h: NewHistory(), obs: Observed{
		Tags: map[string]map[string]int{"pg": {}, "pg-b": {}, "surreal": {}}, Balances: map[string]int64{},
		LogSums: map[string]int64{}, Lists: map[string]map[string][]string{},
	}}
}

// op records one operation writing tag to the given stores and, when
// visible, puts its rows in the state.
func (p *planted) op(typ Type, tag string, writes map[string]int, visible bool) int64 {
	v := &Value{Tag: tag, Writes: writes}
	id := p.h.Invoke(1, FAppend, v)
	var err error
	if typ == Fail {
		err = errors.New("aborted")
	}
	p.h.Complete(1, id, FAppend, typ, "tx-"+tag, nil, err)
	if visible {
		for part, n := range writes {
			p.obs.Tags[part][tag] += n
		}
	}
	return id
}

func kinds(as []Anomaly) map[string]int { return CountAnomalies(as) }

func expectOnly(t *testing.T, as []Anomaly, want map[string]int) {
	t.Helper()
	got := kinds(as)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: found %d, want %d (all: %v)", k, got[k], n, as)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %d anomalies of kind %s: %v", n, k, as)
		}
	}
}

var both = map[string]int{"pg": 1, "surreal": 1}

func TestCheckTagsConsistentHistoryIsClean(t *testing.T) {
	p := newPlanted()
	p.op(OK, "e1", both, true)
	p.op(Fail, "e2", both, false)
	p.op(Unknown, "e3", both, true)
	p.op(Unknown, "e4", both, false)
	p.op(OK, "e5", map[string]int{"pg": 2}, true) // a one-store transfer logs two rows
	expectOnly(t, CheckTags(Operations(p.h.Events()), p.obs), nil)
}

func TestCheckTagsFindsPlantedAnomalies(t *testing.T) {
	cases := []struct {
		name  string
		plant func(p *planted)
		want  map[string]int
	}{
		{"ok op missing everywhere", func(p *planted) { p.op(OK, "x", both, false) }, map[string]int{ALostCommit: 1}},
		{"ok op in one store only", func(p *planted) {
			p.op(OK, "x", both, false)
			p.obs.Tags["pg"]["x"] = 1
		}, map[string]int{APartial: 1}},
		{"unknown op in one store only", func(p *planted) {
			p.op(Unknown, "x", both, false)
			p.obs.Tags["surreal"]["x"] = 1
		}, map[string]int{APartial: 1}},
		{"failed op visible", func(p *planted) { p.op(Fail, "x", both, true) }, map[string]int{AFailedVisible: 1}},
		{"failed op half visible", func(p *planted) {
			p.op(Fail, "x", both, false)
			p.obs.Tags["pg"]["x"] = 1
		}, map[string]int{AFailedVisible: 1, APartial: 1}},
		{"applied twice", func(p *planted) {
			p.op(OK, "x", both, true)
			p.obs.Tags["pg"]["x"]++
		}, map[string]int{ADuplicate: 1}},
		{"one leg of a one-store transfer", func(p *planted) {
			p.op(OK, "x", map[string]int{"pg": 2}, false)
			p.obs.Tags["pg"]["x"] = 1
		}, map[string]int{APartial: 1}},
		{"write by nobody", func(p *planted) { p.obs.Tags["pg-b"]["ghost"] = 1 }, map[string]int{AUnexpected: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPlanted()
			p.op(OK, "fine", both, true)
			c.plant(p)
			expectOnly(t, CheckTags(Operations(p.h.Events()), p.obs), c.want)
		})
	}
}

func TestCheckTagsStatus(t *testing.T) {
	cases := []struct {
		name    string
		typ     Type
		visible bool
		status  Outcome
		want    map[string]int
	}{
		{"ok committed", OK, true, OutcomeCommitted, nil},
		{"ok but aborted", OK, true, OutcomeAborted, map[string]int{AStatus: 1}},
		{"failed but committed", Fail, false, OutcomeCommitted, map[string]int{AStatus: 1}},
		{"unknown resolved committed, absent", Unknown, false, OutcomeCommitted, map[string]int{AStatus: 1}},
		{"unknown resolved aborted, visible", Unknown, true, OutcomeAborted, map[string]int{AStatus: 1}},
		{"unknown resolved aborted, absent", Unknown, false, OutcomeAborted, nil},
		{"unknown unresolved", Unknown, true, OutcomeUnknown, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPlanted()
			p.op(c.typ, "x", both, c.visible)
			ops := Operations(p.h.Events())
			ops[0].Status = c.status
			expectOnly(t, CheckTags(ops, p.obs), c.want)
		})
	}
}

// An idem operation left unknown whose own attempt aborted, retried under
// the same tag by an operation that committed: the rows are the retry's,
// no contradiction. Without the committed retry they are one.
func TestCheckTagsRetriedTagIsNotAContradiction(t *testing.T) {
	p := newPlanted()
	p.op(Unknown, "k", both, true)
	p.op(OK, "k", both, false) // the same rows: counted once, by the first op
	ops := Operations(p.h.Events())
	ops[0].Status, ops[1].Status = OutcomeAborted, OutcomeCommitted
	expectOnly(t, CheckTags(ops, p.obs), nil)

	p = newPlanted()
	p.op(Unknown, "k", both, true)
	p.op(Fail, "k", both, false)
	ops = Operations(p.h.Events())
	ops[0].Status, ops[1].Status = OutcomeAborted, OutcomeAborted
	expectOnly(t, CheckTags(ops, p.obs), map[string]int{AStatus: 2, AFailedVisible: 1})
}

func TestOperationsFoldsUnfinishedAsUnknown(t *testing.T) {
	h := NewHistory()
	a := h.Invoke(1, FTransfer, &Value{Tag: "a"})
	b := h.Invoke(2, FIdem, &Value{Tag: "b"})
	h.Complete(2, b, FIdem, OK, "", &Value{Tag: "b", Attempts: []Attempt{{TxID: "t1", Result: Unknown}, {TxID: "t2", Result: OK, Replayed: true}}}, nil)
	ops := Operations(h.Events())
	if len(ops) != 2 || ops[0].ID != a || ops[0].Type != Unknown || ops[1].Type != OK {
		t.Fatalf("ops: %+v", ops)
	}
	if ids := ops[1].TxIDs(); len(ids) != 2 || ids[0] != "t1" || ids[1] != "t2" {
		t.Fatalf("txids: %v", ids)
	}
	total, byF := Count(ops)
	if total.Txns != 2 || total.OK != 1 || total.Unknown != 1 || byF[FIdem].OK != 1 {
		t.Fatalf("counts: %+v %+v", total, byF)
	}
}

func TestCheckBank(t *testing.T) {
	spec := BankSpec{Accounts: []string{"pg/a", "pg-b/b", "surreal/s"}, Initial: 100}
	good := func() Observed {
		return Observed{
			Balances: map[string]int64{"pg/a": 90, "pg-b/b": 100, "surreal/s": 110},
			LogSums:  map[string]int64{"pg/a": -10, "surreal/s": 10},
		}
	}
	expectOnly(t, CheckBank(spec, good()), nil)
	cases := []struct {
		name  string
		plant func(o *Observed)
		want  map[string]int
	}{
		{"lost update", func(o *Observed) { o.Balances["surreal/s"] = 100; o.Balances["pg-b/b"] = 110 },
			map[string]int{ABalanceDrift: 2}},
		{"money created", func(o *Observed) { o.Balances["pg/a"] = 95 }, map[string]int{ABalanceDrift: 1, ATotal: 1}},
		{"negative", func(o *Observed) {
			o.Balances["pg/a"], o.LogSums["pg/a"] = -5, -105
			o.Balances["surreal/s"], o.LogSums["surreal/s"] = 205, 105
		}, map[string]int{ANegative: 1}},
		{"missing", func(o *Observed) { delete(o.Balances, "pg-b/b") }, map[string]int{AMissing: 1, ATotal: 1}},
		{"unexpected", func(o *Observed) { o.Balances["pg/zz"] = 0 }, map[string]int{AExtraAccount: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good()
			c.plant(&o)
			expectOnly(t, CheckBank(spec, o), c.want)
		})
	}
}

func TestCheckListOrder(t *testing.T) {
	obs := Observed{Lists: map[string]map[string][]string{
		"l1": {"pg": {"a", "b", "c"}, "surreal": {"a", "b", "c"}, "pg-b": {"b", "c"}},
		"l2": {"pg": {"a", "x", "b"}, "surreal": {"a", "b"}},
	}}
	expectOnly(t, CheckListOrder(obs), nil)
	obs.Lists["l3"] = map[string][]string{"pg": {"a", "b"}, "surreal": {"b", "a"}}
	expectOnly(t, CheckListOrder(obs), map[string]int{AListOrder: 1})
}

func TestCheckDigests(t *testing.T) {
	same := []Digest{{Node: "n1", Applied: 10, SHA256: "x"}, {Node: "n2", Applied: 10, SHA256: "x"}, {Node: "n3", Applied: 10, SHA256: "x"}}
	expectOnly(t, CheckDigests(same), nil)
	differ := append([]Digest(nil), same...)
	differ[2].SHA256 = "y"
	expectOnly(t, CheckDigests(differ), map[string]int{AStoresDiffer: 1})
	behind := append([]Digest(nil), same...)
	behind[1].Applied = 9
	expectOnly(t, CheckDigests(behind), map[string]int{AStoresNotConverged: 1})
	down := append([]Digest(nil), same...)
	down[0].Err = "unreachable"
	expectOnly(t, CheckDigests(down), map[string]int{AStoresNotConverged: 1})
	expectOnly(t, CheckDigests(nil), map[string]int{AStoresNotConverged: 1})
}

func TestInDoubtTotal(t *testing.T) {
	if n := (InDoubt{PGPrepared: 1, SurrealIntents: 2, SurrealLocks: 3, LogNotDone: 4}).Total(); n != 10 {
		t.Fatal(n)
	}
}
