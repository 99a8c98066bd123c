package coordinator

import "fmt"

// State is a transaction's place in the two-phase commit protocol.
type State int

const (
	StateActive     State = iota + 1 // accepting statements
	StatePreparing                   // votes being collected
	StateCommitting                  // commit decision durable; phase two running
	StateAborting                    // rolling back branches
	StateCommitted                   // every branch acknowledged commit
	StateAborted                     // every branch rolled back
	StateInDoubt                     // this node does not know the outcome; recovery will
)

var stateNames = map[State]string{
	StateActive: "ACTIVE", StatePreparing: "PREPARING", StateCommitting: "COMMITTING",
	StateAborting: "ABORTING", StateCommitted: "COMMITTED", StateAborted: "ABORTED", StateInDoubt: "IN_DOUBT",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Terminal reports whether no event can move the state any more.
func (s State) Terminal() bool {
	return s == StateCommitted || s == StateAborted || s == StateInDoubt
}

// Event is something that happens to a transaction.
type Event int

const (
	EvExecute        Event = iota + 1 // a statement arrives
	EvCommit                          // the client asks to commit
	EvRollback                        // the client asks to roll back
	EvTimeout                         // the transaction's deadline passed
	EvAllVoted                        // every branch voted YES or READ_ONLY
	EvVoteNo                          // a branch voted NO (or prepare failed)
	EvOnePhaseOK                      // single-branch commit succeeded
	EvOnePhaseFailed                  // single-branch commit definitely failed
	EvOutcomeUnknown                  // the decision's or a one-phase commit's fate is unknown
	EvDecisionLogged                  // commit decision applied by a Raft quorum
	EvPhaseTwoDone                    // every branch acknowledged phase two
)

var eventNames = map[Event]string{
	EvExecute: "Execute", EvCommit: "Commit", EvRollback: "Rollback", EvTimeout: "Timeout",
	EvAllVoted: "AllVoted", EvVoteNo: "VoteNo", EvOnePhaseOK: "OnePhaseOK", EvOnePhaseFailed: "OnePhaseFailed",
	EvOutcomeUnknown: "OutcomeUnknown", EvDecisionLogged: "DecisionLogged", EvPhaseTwoDone: "PhaseTwoDone",
}

func (e Event) String() string {
	if n, ok := eventNames[e]; ok {
		return n
	}
	return fmt.Sprintf("Event(%d)", int(e))
}

// Effect is work the driver must do after a transition. The state machine
// itself does no I/O (etcd-raft's pure core): the driver runs effects.
type Effect int

const (
	EffRunStatement Effect = iota + 1 // run the statement on its branch
	EffPrepareAll                     // prepare all branches in parallel (or one-phase commit a single branch)
	EffLogCommit                      // append the commit decision to the Raft log
	EffCommitAll                      // commit every YES branch, retrying until acknowledged
	EffRollbackAll                    // roll back every branch, retrying until acknowledged
	EffForget                         // mark the transaction done (lazily, batched)
	EffReplyCommitted
	EffReplyAborted
	EffReplyUnknown
)

var effectNames = map[Effect]string{
	EffRunStatement: "RunStatement", EffPrepareAll: "PrepareAll", EffLogCommit: "LogCommit",
	EffCommitAll: "CommitAll", EffRollbackAll: "RollbackAll", EffForget: "Forget",
	EffReplyCommitted: "ReplyCommitted", EffReplyAborted: "ReplyAborted", EffReplyUnknown: "ReplyUnknown",
}

func (e Effect) String() string {
	if n, ok := effectNames[e]; ok {
		return n
	}
	return fmt.Sprintf("Effect(%d)", int(e))
}

// IllegalTransition is returned for an event that the state does not accept.
type IllegalTransition struct {
	From  State
	Event Event
}

func (e *IllegalTransition) Error() string {
	return fmt.Sprintf("%s is not allowed in state %s", e.Event, e.From)
}

type transition struct {
	to      State
	effects []Effect
}

// table holds every legal (state, event) pair. Anything missing is illegal.
var table = map[State]map[Event]transition{
	StateActive: {
		EvExecute:  {StateActive, []Effect{EffRunStatement}},
		EvCommit:   {StatePreparing, []Effect{EffPrepareAll}},
		EvRollback: {StateAborting, []Effect{EffRollbackAll}},
		EvTimeout:  {StateAborting, []Effect{EffRollbackAll}},
	},
	StatePreparing: {
		EvAllVoted:       {StatePreparing, []Effect{EffLogCommit}},
		EvVoteNo:         {StateAborting, []Effect{EffRollbackAll}},
		EvOnePhaseOK:     {StateCommitted, []Effect{EffReplyCommitted}},
		EvOnePhaseFailed: {StateAborted, []Effect{EffReplyAborted}},
		// Timeout while preparing: prepare has its own deadline; the vote
		// (or its failure) decides. Commit wins only through EvDecisionLogged.
		EvDecisionLogged: {StateCommitting, []Effect{EffCommitAll}},
		EvOutcomeUnknown: {StateInDoubt, []Effect{EffReplyUnknown}},
	},
	StateCommitting: {
		EvPhaseTwoDone: {StateCommitted, []Effect{EffForget, EffReplyCommitted}},
		// The decision is durable: replying before phase two ends is allowed
		// (the driver does so when a participant is slow), but never anything
		// other than committed.
	},
	StateAborting: {
		EvPhaseTwoDone: {StateAborted, []Effect{EffReplyAborted}},
		EvRollback:     {StateAborting, nil}, // repeated rollback: idempotent
		EvTimeout:      {StateAborting, nil},
	},
	StateAborted: {
		EvRollback: {StateAborted, nil}, // idempotent
		EvTimeout:  {StateAborted, nil},
	},
	StateCommitted: {},
	StateInDoubt: {
		EvTimeout: {StateInDoubt, nil},
	},
}

// Transition is the pure 2PC transition function: it returns the next state
// and the effects to run, or *IllegalTransition.
func Transition(s State, e Event) (State, []Effect, error) {
	row, ok := table[s]
	if !ok {
		panic(fmt.Sprintf("coordinator: transition from unknown state %d", int(s)))
	}
	t, ok := row[e]
	if !ok {
		return s, nil, &IllegalTransition{From: s, Event: e}
	}
	return t.to, t.effects, nil
}

// AllStates and AllEvents list the enum values (for table tests and docs).
var (
	AllStates = []State{StateActive, StatePreparing, StateCommitting, StateAborting, StateCommitted, StateAborted, StateInDoubt}
	AllEvents = []Event{EvExecute, EvCommit, EvRollback, EvTimeout, EvAllVoted, EvVoteNo, EvOnePhaseOK,
		EvOnePhaseFailed, EvOutcomeUnknown, EvDecisionLogged, EvPhaseTwoDone}
)
