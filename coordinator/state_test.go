package coordinator

import (
	"errors"
	"slices"
	"testing"
)

// TestTransitionTable covers every state×event pair: legal pairs go where
// the protocol says, with the effects the driver must run; every other pair
// is rejected with *IllegalTransition and leaves the state unchanged.
func TestTransitionTable(t *testing.T) {
	type want struct {
		to      State
		effects []Effect
	}
	legal := map[State]map[Event]want{
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
			EvDecisionLogged: {StateCommitting, []Effect{EffCommitAll}},
			EvOutcomeUnknown: {StateInDoubt, []Effect{EffReplyUnknown}},
		},
		StateCommitting: {
			EvPhaseTwoDone: {StateCommitted, []Effect{EffForget, EffReplyCommitted}},
		},
		StateAborting: {
			EvPhaseTwoDone: {StateAborted, []Effect{EffReplyAborted}},
			EvRollback:     {StateAborting, nil},
			EvTimeout:      {StateAborting, nil},
		},
		StateAborted: {
			EvRollback: {StateAborted, nil},
			EvTimeout:  {StateAborted, nil},
		},
		StateInDoubt: {
			EvTimeout: {StateInDoubt, nil},
		},
	}
	pairs := 0
	for _, s := range AllStates {
		for _, e := range AllEvents {
			pairs++
			t.Run(s.String()+"/"+e.String(), func(t *testing.T) {
				got, effects, err := Transition(s, e)
				w, ok := legal[s][e]
				if !ok {
					var it *IllegalTransition
					if !errors.As(err, &it) || it.From != s || it.Event != e {
						t.Fatalf("want IllegalTransition, got %v", err)
					}
					if got != s || effects != nil {
						t.Fatalf("illegal transition changed state to %s / effects %v", got, effects)
					}
					return
				}
				if err != nil {
					t.Fatalf("legal transition refused: %v", err)
				}
				if got != w.to || !slices.Equal(effects, w.effects) {
					t.Fatalf("got %s %v, want %s %v", got, effects, w.to, w.effects)
				}
			})
		}
	}
	if pairs != len(AllStates)*len(AllEvents) || pairs < 70 {
		t.Fatalf("covered %d pairs", pairs)
	}
}

// TestCommitOnlyAfterDecision: the only way into a state that sends COMMIT
// (EffCommitAll) is the EvDecisionLogged event (DESIGN.md invariant 1).
func TestCommitOnlyAfterDecision(t *testing.T) {
	for _, s := range AllStates {
		for _, e := range AllEvents {
			_, effects, err := Transition(s, e)
			if err == nil && slices.Contains(effects, EffCommitAll) && e != EvDecisionLogged {
				t.Errorf("%s/%s sends COMMIT without a logged decision", s, e)
			}
		}
	}
}

func TestTerminalStatesAcceptNoProgress(t *testing.T) {
	for _, s := range AllStates {
		if !s.Terminal() {
			continue
		}
		for _, e := range AllEvents {
			if to, _, err := Transition(s, e); err == nil && to != s {
				t.Errorf("terminal %s moved to %s on %s", s, to, e)
			}
		}
	}
}

func TestStringers(t *testing.T) {
	for _, s := range AllStates {
		if s.String() == "" || s.String()[0] == 'S' {
			t.Errorf("state %d has no name", int(s))
		}
	}
	for _, e := range AllEvents {
		if e.String() == "" || e.String()[:5] == "Event" {
			t.Errorf("event %d has no name", int(e))
		}
	}
	if State(99).String() != "State(99)" {
		t.Error("unknown state not rendered")
	}
}
