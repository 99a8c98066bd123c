// Package server exposes a coordinator.Coordinator over gRPC (txcoord.v1).
// It converts between wire and domain types and maps domain errors to status
// codes, one rule each (docs/api.md is the contract):
//
//	InvalidArgument     bad input; the message names the field (nothing done)
//	NotFound            unknown transaction id
//	FailedPrecondition  the transaction is not in a state that allows the call
//	ResourceExhausted   a server limit was reached; retry later
//	Unavailable         not the leader / recovering / participant down before
//	                    anything was decided; retry (ErrorInfo reason UNAVAILABLE)
//	Aborted             the transaction was rolled back (reason and participant in the message)
//	Unknown + ErrorInfo reason OUTCOME_UNKNOWN
//	                    the outcome is not known yet; ask GetTransaction; never a failure
package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/internal/wire"
	"github.com/txcoord/txcoord/participants"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Coordinator is the part of coordinator.Coordinator the server uses.
type Coordinator interface {
	Begin(ctx context.Context, opts coordinator.TxOptions) (string, time.Time, error)
	Execute(ctx context.Context, txid string, st coordinator.Statement) (participants.Result, error)
	Commit(ctx context.Context, txid string) error
	Rollback(ctx context.Context, txid string) error
	GetTransaction(ctx context.Context, txid string) (*coordinator.TxInfo, error)
	Run(ctx context.Context, opts coordinator.TxOptions, stmts []coordinator.Statement) (string, []participants.Result, error)
}

// Server implements pb.CoordinatorServer.
type Server struct {
	pb.UnimplementedCoordinatorServer
	c Coordinator
}

// New wraps a coordinator.
func New(c Coordinator) *Server { return &Server{c: c} }

func (s *Server) Begin(ctx context.Context, req *pb.BeginRequest) (*pb.BeginResponse, error) {
	opts, err := txOptions(req.GetOptions())
	if err != nil {
		return nil, toStatus(err, "")
	}
	withCaller(ctx, &opts)
	txid, deadline, err := s.c.Begin(ctx, opts)
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.BeginResponse{Txid: txid, Deadline: timestamppb.New(deadline)}, nil
}

func (s *Server) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteResponse, error) {
	st, err := statement(req.GetStatement(), "statement")
	if err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	res, err := s.c.Execute(ctx, req.GetTxid(), st)
	if err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	return &pb.ExecuteResponse{Result: result(res)}, nil
}

func (s *Server) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	if err := s.c.Commit(ctx, req.GetTxid()); err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	resp := &pb.CommitResponse{Outcome: pb.Outcome_COMMITTED}
	if info, err := s.c.GetTransaction(ctx, req.GetTxid()); err == nil {
		resp.Transaction = txInfo(info)
	}
	return resp, nil
}

func (s *Server) Rollback(ctx context.Context, req *pb.RollbackRequest) (*pb.RollbackResponse, error) {
	if err := s.c.Rollback(ctx, req.GetTxid()); err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	return &pb.RollbackResponse{}, nil
}

func (s *Server) GetTransaction(ctx context.Context, req *pb.GetTransactionRequest) (*pb.Transaction, error) {
	info, err := s.c.GetTransaction(ctx, req.GetTxid())
	if err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	return txInfo(info), nil
}

func (s *Server) Run(ctx context.Context, req *pb.RunRequest) (*pb.RunResponse, error) {
	opts, err := txOptions(req.GetOptions())
	if err != nil {
		return nil, toStatus(err, "")
	}
	withCaller(ctx, &opts)
	stmts := make([]coordinator.Statement, 0, len(req.GetStatements()))
	for i, ps := range req.GetStatements() {
		st, err := statement(ps, fmt.Sprintf("statements[%d]", i))
		if err != nil {
			return nil, toStatus(err, "")
		}
		stmts = append(stmts, st)
	}
	opts.OnBegin = func(txid string) {
		// Best effort: if the header cannot be sent, the client learns the
		// txid from the answer as before.
		_ = grpc.SendHeader(ctx, metadata.Pairs(wire.TxIDHeader, txid))
	}
	txid, results, err := s.c.Run(ctx, opts, stmts)
	if errors.Is(err, coordinator.ErrReplayed) {
		return &pb.RunResponse{Txid: txid, Outcome: pb.Outcome_COMMITTED, Replayed: true}, nil
	}
	if err != nil {
		return nil, toStatus(err, txid)
	}
	resp := &pb.RunResponse{Txid: txid, Outcome: pb.Outcome_COMMITTED}
	for _, r := range results {
		resp.Results = append(resp.Results, result(r))
	}
	return resp, nil
}

// withCaller attaches the authenticated client and its limit.
func withCaller(ctx context.Context, opts *coordinator.TxOptions) {
	if c, ok := security.CallerFrom(ctx); ok {
		opts.Client, opts.ClientMaxActive = c.Name, c.Policy.MaxActive
	}
}

func fieldErr(field, format string, args ...any) error {
	return &coordinator.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func txOptions(o *pb.TransactionOptions) (coordinator.TxOptions, error) {
	var opts coordinator.TxOptions
	if o == nil {
		return opts, nil
	}
	if o.Timeout != nil {
		if err := o.Timeout.CheckValid(); err != nil {
			return opts, fieldErr("options.timeout", "%v", err)
		}
		opts.Timeout = o.Timeout.AsDuration()
	}
	switch o.Isolation {
	case pb.IsolationLevel_ISOLATION_LEVEL_UNSPECIFIED, pb.IsolationLevel_READ_COMMITTED:
		opts.Isolation = participants.ReadCommitted
	case pb.IsolationLevel_REPEATABLE_READ:
		opts.Isolation = participants.RepeatableRead
	case pb.IsolationLevel_SERIALIZABLE:
		opts.Isolation = participants.Serializable
	default:
		return opts, fieldErr("options.isolation", "unknown isolation level %d", o.Isolation)
	}
	opts.Labels = o.Labels
	opts.IdempotencyKey = o.IdempotencyKey
	opts.AckDecision = o.Ack == pb.AckMode_ACK_DECISION
	return opts, nil
}

var recordKinds = map[pb.RecordOperation_Kind]participants.OpKind{
	pb.RecordOperation_READ: participants.OpRead, pb.RecordOperation_QUERY: participants.OpQuery,
	pb.RecordOperation_CREATE: participants.OpCreate, pb.RecordOperation_UPSERT: participants.OpUpsert,
	pb.RecordOperation_MERGE: participants.OpMerge, pb.RecordOperation_DELETE: participants.OpDelete,
}

func statement(ps *pb.Statement, field string) (coordinator.Statement, error) {
	var st coordinator.Statement
	if ps == nil {
		return st, fieldErr(field, "is missing")
	}
	st.Participant = ps.Participant
	switch op := ps.Op.(type) {
	case *pb.Statement_Sql:
		st.Op.Kind = participants.OpSQL
		st.Op.SQL = op.Sql.GetSql()
		for i, a := range op.Sql.GetArgs() {
			v, err := wire.FromProto(a)
			if err != nil {
				return st, fieldErr(fmt.Sprintf("%s.sql.args[%d]", field, i), "%v", err)
			}
			st.Op.Args = append(st.Op.Args, v)
		}
	case *pb.Statement_Record:
		r := op.Record
		kind, ok := recordKinds[r.GetKind()]
		if !ok {
			return st, fieldErr(field+".record.kind", "set one of READ, QUERY, CREATE, UPSERT, MERGE, DELETE")
		}
		st.Op.Kind = kind
		st.Op.SQL = r.GetQuery()
		if rid := r.GetRecord(); rid != nil {
			id, err := wire.FromProto(rid.GetId())
			if err != nil {
				return st, fieldErr(field+".record.record.id", "%v", err)
			}
			st.Op.Record = participants.RecordID{Table: rid.GetTable(), ID: id}
		}
		content, err := wire.MapFromProto(r.GetContent())
		if err != nil {
			return st, fieldErr(field+".record.content", "%v", err)
		}
		st.Op.Content = content
		if len(r.GetVars()) > 0 {
			st.Op.Vars = map[string]any{}
			for k, v := range r.GetVars() {
				x, err := wire.FromProto(v)
				if err != nil {
					return st, fieldErr(field+".record.vars."+k, "%v", err)
				}
				st.Op.Vars[k] = x
			}
		}
	default:
		return st, fieldErr(field, "set either sql (PostgreSQL) or record (SurrealDB)")
	}
	return st, nil
}

func result(r participants.Result) *pb.StatementResult {
	out := &pb.StatementResult{Columns: r.Columns, RowsAffected: r.RowsAffected}
	for _, row := range r.Rows {
		pr := &pb.Row{Values: make([]*pb.Value, len(row))}
		for i, v := range row {
			pr.Values[i] = wire.ToProto(v)
		}
		out.Rows = append(out.Rows, pr)
	}
	return out
}

var stateToProto = map[coordinator.State]pb.TransactionState{
	coordinator.StateActive: pb.TransactionState_ACTIVE, coordinator.StatePreparing: pb.TransactionState_PREPARING,
	coordinator.StateCommitting: pb.TransactionState_COMMITTING, coordinator.StateAborting: pb.TransactionState_ABORTING,
	coordinator.StateCommitted: pb.TransactionState_COMMITTED_STATE, coordinator.StateAborted: pb.TransactionState_ABORTED_STATE,
	coordinator.StateInDoubt: pb.TransactionState_IN_DOUBT,
}

var outcomeToProto = map[coordinator.Outcome]pb.Outcome{
	coordinator.OutcomePending: pb.Outcome_PENDING, coordinator.OutcomeCommitted: pb.Outcome_COMMITTED,
	coordinator.OutcomeAborted: pb.Outcome_ABORTED, coordinator.OutcomeUnknown: pb.Outcome_UNKNOWN,
}

var branchToProto = map[coordinator.BranchState]pb.BranchState{
	coordinator.BranchActive: pb.BranchState_BRANCH_ACTIVE, coordinator.BranchPrepared: pb.BranchState_BRANCH_PREPARED,
	coordinator.BranchReadOnly: pb.BranchState_BRANCH_READ_ONLY, coordinator.BranchCommitted: pb.BranchState_BRANCH_COMMITTED,
	coordinator.BranchRolledBack: pb.BranchState_BRANCH_ROLLED_BACK, coordinator.BranchFailed: pb.BranchState_BRANCH_FAILED,
}

func txInfo(i *coordinator.TxInfo) *pb.Transaction {
	t := &pb.Transaction{
		Txid: i.TxID, State: stateToProto[i.State], Outcome: outcomeToProto[i.Outcome], Labels: i.Labels,
		Error: i.Error, Presumed: i.Presumed, Heuristic: i.Heuristic,
	}
	for _, e := range i.Timeline {
		t.Timeline = append(t.Timeline, &pb.TransactionEvent{At: timestamppb.New(e.At), Event: e.Event,
			Participant: e.Participant, Detail: e.Detail})
	}
	if !i.CreatedAt.IsZero() {
		t.CreatedAt = timestamppb.New(i.CreatedAt)
	}
	if !i.Deadline.IsZero() {
		t.Deadline = timestamppb.New(i.Deadline)
	}
	for _, b := range i.Branches {
		t.Branches = append(t.Branches, &pb.Branch{Participant: b.Participant, Gid: b.GID,
			State: branchToProto[b.State], Vote: b.Vote, Error: b.Error, Retries: uint32(b.Retries)})
	}
	return t
}

// toStatus maps a domain error to a gRPC status with an ErrorInfo detail.
func toStatus(err error, txid string) error {
	if err == nil {
		return nil
	}
	var code codes.Code
	reason := ""
	var fe *coordinator.FieldError
	switch {
	case errors.As(err, &fe), errors.Is(err, coordinator.ErrInvalidArgument):
		code, reason = codes.InvalidArgument, wire.ReasonInvalid
	case errors.Is(err, coordinator.ErrOutcomeUnknown):
		code, reason = codes.Unknown, wire.ReasonOutcomeUnknown
	case errors.Is(err, coordinator.ErrAborted):
		code, reason = codes.Aborted, wire.ReasonAborted
		// A statement the participant refused as malformed or unsupported is
		// the caller's mistake: say so with InvalidArgument (the transaction
		// was still rolled back, as the message says).
		if errors.Is(err, participants.ErrBadOperation) || errors.Is(err, participants.ErrUnsupported) {
			code, reason = codes.InvalidArgument, wire.ReasonInvalid
		}
	case errors.Is(err, coordinator.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, coordinator.ErrDecisionConflict):
		code, reason = codes.FailedPrecondition, wire.ReasonDecisionConflict
	case errors.Is(err, coordinator.ErrNotActive):
		code, reason = codes.FailedPrecondition, wire.ReasonNotActive
	case errors.Is(err, coordinator.ErrLimit):
		code = codes.ResourceExhausted
	case errors.Is(err, coordinator.ErrUnavailable), errors.Is(err, participants.ErrUnavailable):
		code, reason = codes.Unavailable, wire.ReasonUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		code = codes.Internal
	}
	st := status.New(code, err.Error())
	if reason != "" {
		md := map[string]string{}
		if txid != "" {
			md["txid"] = txid
		}
		if fe != nil {
			md["field"] = fe.Field
		} else if reason == wire.ReasonNotActive {
			md["field"] = "txid"
		}
		var ae *coordinator.AbortError
		if errors.As(err, &ae) && ae.Participant != "" {
			md["participant"] = ae.Participant
		}
		var nl *coordinator.NotLeaderError
		if errors.As(err, &nl) && nl.LeaderAddr != "" {
			md["leader"] = nl.LeaderAddr
			md["leader_id"] = nl.LeaderID
		}
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: wire.Domain, Metadata: md}); derr == nil {
			st = d
		}
	}
	return st.Err()
}
