// Package opsreport holds the judgements that txctl and the web console both
// show, so that the two never disagree: the cluster's health from every
// member's own view (Gather) and what counts as "in doubt" in an InDoubt
// answer (InDoubtCount). It has two exported types, Report and MemberView.
package opsreport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// MemberView is one member as it sees itself: Status, or the Err asking it.
type MemberView struct {
	Member *pb.Member
	Status *pb.ClusterStatusResponse
	Err    error
}

// Report is the cluster as one node answered it (AnsweredBy), every member's
// own view, and what is unhealthy (Problems, empty when healthy).
type Report struct {
	AnsweredBy *pb.ClusterStatusResponse
	Members    []MemberView
	Problems   []string
}

// Healthy reports whether no problem was found.
func (r Report) Healthy() bool { return len(r.Problems) == 0 }

// MemberCallTimeout bounds asking one member for its own view: a dead
// member must not hold up the report.
const MemberCallTimeout = 2 * time.Second

// Asker asks the member at a gRPC address for its own view of the cluster.
type Asker func(ctx context.Context, addr string) (*pb.ClusterStatusResponse, error)

// Gather asks every member of st (the answer of one node) for its own view,
// in parallel, each call bounded by MemberCallTimeout, and lists what is
// unhealthy: no leader, a member unreachable or without a logged address, a
// leader not ready, members disagreeing on the leader, a member lagging the
// leader's commit index by more than 1000 entries. It never fails: what
// could not be asked is in the member's Err and in Problems.
func Gather(ctx context.Context, st *pb.ClusterStatusResponse, ask Asker) Report {
	r := Report{AnsweredBy: st, Members: make([]MemberView, len(st.Members))}
	var wg sync.WaitGroup
	for i, m := range st.Members {
		r.Members[i].Member = m
		if m.GrpcAddress == "" {
			r.Members[i].Err = fmt.Errorf("no gRPC address logged for %s (it has not led since it joined; it registers when it leads or is added with --grpc)", m.Id)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mctx, cancel := context.WithTimeout(ctx, MemberCallTimeout)
			defer cancel()
			r.Members[i].Status, r.Members[i].Err = ask(mctx, m.GrpcAddress)
			if r.Members[i].Status == nil && r.Members[i].Err == nil {
				r.Members[i].Err = errors.New("empty answer")
			}
		}()
	}
	wg.Wait()
	if st.LeaderId == "" {
		r.Problems = append(r.Problems, fmt.Sprintf("no leader known to %s (state %s, term %d): election in progress, or no quorum", st.NodeId, st.State, st.Term))
	}
	var leader *pb.ClusterStatusResponse
	for _, v := range r.Members {
		if v.Status != nil && v.Status.State == "Leader" {
			leader = v.Status
		}
	}
	for _, v := range r.Members {
		switch {
		case v.Err != nil && v.Member.GrpcAddress != "":
			r.Problems = append(r.Problems, fmt.Sprintf("%s unreachable at %s: %v", v.Member.Id, v.Member.GrpcAddress, ErrText(v.Err)))
		case v.Err != nil:
			r.Problems = append(r.Problems, v.Err.Error())
		case v.Status.State == "Leader" && !v.Status.Ready:
			r.Problems = append(r.Problems, fmt.Sprintf("leader %s is not ready yet (recovering before it serves)", v.Member.Id))
		case st.LeaderId != "" && v.Status.LeaderId != st.LeaderId:
			r.Problems = append(r.Problems, fmt.Sprintf("%s sees leader %q, %s sees %q", v.Member.Id, v.Status.LeaderId, st.NodeId, st.LeaderId))
		case leader != nil && v.Status != leader && leader.CommitIndex > v.Status.AppliedIndex+1000:
			r.Problems = append(r.Problems, fmt.Sprintf("%s lags: applied %d, leader commit %d", v.Member.Id, v.Status.AppliedIndex, leader.CommitIndex))
		}
	}
	return r
}

// ErrText is an error's message without the client's "txcoord: CODE:" prefix.
func ErrText(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Message
	}
	return err.Error()
}

// InDoubtCount counts what keeps the cluster from "nothing in doubt": our
// branches not in flight, undone decisions, unreachable participants.
func InDoubtCount(r *pb.InDoubtResponse) int {
	n := len(r.Undone) + len(r.Unreachable)
	for _, b := range r.Branches {
		if b.Ours && b.Action != pb.PlannedAction_IN_PROGRESS {
			n++
		}
	}
	return n
}
