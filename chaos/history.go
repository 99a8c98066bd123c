package chaos

import (
	"bufio"
	"encoding/json"
	"os"
	"sort"
	"sync"
	"time"
)

// Type is the kind of a history event, as in Jepsen: an operation is
// invoked, then completes ok, fail or unknown. A timeout is unknown, never
// fail: the operation may have taken effect.
type Type string

const (
	Invoke  Type = "invoke"
	OK      Type = "ok"
	Fail    Type = "fail"
	Unknown Type = "unknown"
)

// Workload functions (Event.F).
const (
	FTransfer = "transfer" // bank: move money between two accounts
	FAppend   = "append"   // atomic visibility: append one element to a list in several stores
	FIdem     = "idem"     // retried Run with an idempotency key
)

// Value describes what an operation does, enough for the checkers.
type Value struct {
	// Tag is the unique marker the operation writes; Writes says how many
	// rows carrying it each participant holds once the operation committed
	// (0 rows everywhere if it did not).
	Tag    string         `json:"tag"`
	Writes map[string]int `json:"writes"`
	// transfer
	From   string `json:"from,omitempty"` // account keys: participant/id
	To     string `json:"to,omitempty"`
	Amount int64  `json:"amount,omitempty"`
	// append
	List string `json:"list,omitempty"`
	// idem: one entry per Run attempt with the same key
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one try of a retried operation.
type Attempt struct {
	TxID     string `json:"txid,omitempty"`
	Result   Type   `json:"result"`
	Replayed bool   `json:"replayed,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Event is one line of the history.
type Event struct {
	Index   int    `json:"index"`
	TimeNs  int64  `json:"time_ns"` // since the run started
	Process int    `json:"process"`
	Type    Type   `json:"type"`
	Op      int64  `json:"op"` // links an invoke to its completion
	F       string `json:"f"`
	Value   *Value `json:"value,omitempty"`
	TxID    string `json:"txid,omitempty"`
	Error   string `json:"error,omitempty"`
}

// History records events from concurrent workers. Safe for concurrent use.
type History struct {
	start  time.Time
	mu     sync.Mutex
	events []Event
	nextOp int64
}

// NewHistory starts an empty history; times are relative to now.
func NewHistory() *History { return &History{start: time.Now()} }

// Invoke records the start of an operation and returns its id.
func (h *History) Invoke(process int, f string, v *Value) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextOp++
	h.append(Event{Process: process, Type: Invoke, Op: h.nextOp, F: f, Value: v})
	return h.nextOp
}

// Complete records how operation op ended. v may update the value (attempts).
func (h *History) Complete(process int, op int64, f string, typ Type, txid string, v *Value, err error) {
	if typ == Invoke {
		panic("chaos: Complete with type invoke")
	}
	e := Event{Process: process, Type: typ, Op: op, F: f, Value: v, TxID: txid}
	if err != nil {
		e.Error = err.Error()
	}
	h.mu.Lock()
	h.append(e)
	h.mu.Unlock()
}

func (h *History) append(e Event) {
	e.Index = len(h.events)
	e.TimeNs = time.Since(h.start).Nanoseconds()
	h.events = append(h.events, e)
}

// Events returns a copy of the events so far.
func (h *History) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// WriteJSONL writes one event per line.
func (h *History) WriteJSONL(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, e := range h.Events() {
		if err := enc.Encode(e); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Outcome is what the coordinator (GetTransaction) says about a txid.
type Outcome string

const (
	OutcomeNone      Outcome = ""          // not asked, or no txid
	OutcomeCommitted Outcome = "committed" // COMMITTED
	OutcomeAborted   Outcome = "aborted"   // ABORTED (presumed or logged)
	OutcomeUnknown   Outcome = "unknown"   // still unknown after the bound
)

// Operation is an invoke folded with its completion.
type Operation struct {
	ID       int64   `json:"id"`
	Process  int     `json:"process"`
	F        string  `json:"f"`
	Type     Type    `json:"type"` // ok, fail or unknown (unknown if it never completed)
	Value    Value   `json:"value"`
	TxID     string  `json:"txid,omitempty"`
	Error    string  `json:"error,omitempty"`
	InvokeNs int64   `json:"invoke_ns"`
	EndNs    int64   `json:"end_ns"`
	Status   Outcome `json:"status,omitempty"` // the coordinator's answer after the run
}

// TxIDs lists every transaction id the operation used (one per attempt).
func (o Operation) TxIDs() []string {
	var out []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	add(o.TxID)
	for _, a := range o.Value.Attempts {
		add(a.TxID)
	}
	return out
}

// Operations folds events into operations, in invoke order. An operation
// invoked but never completed (the run stopped under it) is unknown.
func Operations(events []Event) []Operation {
	byOp := map[int64]*Operation{}
	var order []int64
	for _, e := range events {
		switch e.Type {
		case Invoke:
			o := &Operation{ID: e.Op, Process: e.Process, F: e.F, Type: Unknown, InvokeNs: e.TimeNs, EndNs: -1}
			if e.Value != nil {
				o.Value = *e.Value
			}
			byOp[e.Op] = o
			order = append(order, e.Op)
		default:
			o := byOp[e.Op]
			if o == nil {
				continue // a completion without an invoke is a recorder bug; ignore it here
			}
			o.Type, o.TxID, o.Error, o.EndNs = e.Type, e.TxID, e.Error, e.TimeNs
			if e.Value != nil {
				o.Value = *e.Value
			}
		}
	}
	out := make([]Operation, 0, len(order))
	for _, id := range order {
		out = append(out, *byOp[id])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].InvokeNs < out[j].InvokeNs })
	return out
}

// Counts tallies operations by type.
type Counts struct {
	Txns    int `json:"txns"`
	OK      int `json:"ok"`
	Failed  int `json:"failed"`
	Unknown int `json:"unknown"`
}

// Count tallies ops.
func Count(ops []Operation) (total Counts, byF map[string]Counts) {
	byF = map[string]Counts{}
	for _, o := range ops {
		c := byF[o.F]
		for _, x := range []*Counts{&total, &c} {
			x.Txns++
			switch o.Type {
			case OK:
				x.OK++
			case Fail:
				x.Failed++
			default:
				x.Unknown++
			}
		}
		byF[o.F] = c
	}
	return total, byF
}
