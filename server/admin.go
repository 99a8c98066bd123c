package server

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/security"
	"github.com/txcoord/txcoord/wal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cluster is the part of coordinator.Coordinator the Admin service uses.
type Cluster interface {
	Status() (coordinator.ClusterStatus, error)
	AddVoter(id, raftAddr, grpcAddr, actor string) error
	RemoveServer(id, actor string) error
	TransferLeadership(id, actor string) (string, error)
	Digest() (applied uint64, sum string, records int, err error)
}

// AdminServer implements pb.AdminServer.
type AdminServer struct {
	pb.UnimplementedAdminServer
	c        Cluster
	reloader ConfigReloader // nil: ReloadConfig is Unimplemented
}

// NewAdmin wraps a cluster.
func NewAdmin(c Cluster) *AdminServer { return &AdminServer{c: c} }

func (s *AdminServer) ClusterStatus(ctx context.Context, _ *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	st, err := s.c.Status()
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &pb.ClusterStatusResponse{
		NodeId: st.NodeID, State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastLogIndex: st.LastLogIndex, LeaderId: st.LeaderID, LeaderGrpcAddress: st.LeaderGRPCAddress,
		Ready: st.Ready, LastSnapshotIndex: st.LastSnapshotIndex, Decisions: uint64(st.Decisions),
	}
	if !st.LastContact.IsZero() {
		resp.LastContact = timestamppb.New(st.LastContact)
	}
	for _, m := range st.Members {
		resp.Members = append(resp.Members, &pb.Member{Id: m.ID, RaftAddress: m.RaftAddress, GrpcAddress: m.GRPCAddress,
			Suffrage: m.Suffrage, Role: m.Role})
	}
	return resp, nil
}

func (s *AdminServer) AddVoter(ctx context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	if err := s.c.AddVoter(req.GetId(), req.GetRaftAddress(), req.GetGrpcAddress(), actorOf(ctx, "")); err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.AddVoterResponse{}, nil
}

func (s *AdminServer) RemoveServer(ctx context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	if err := s.c.RemoveServer(req.GetId(), actorOf(ctx, "")); err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.RemoveServerResponse{}, nil
}

func (s *AdminServer) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	id, err := s.c.TransferLeadership(req.GetId(), actorOf(ctx, ""))
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.TransferLeadershipResponse{NewLeaderId: id}, nil
}

func (s *AdminServer) StoreDigest(ctx context.Context, _ *pb.StoreDigestRequest) (*pb.StoreDigestResponse, error) {
	st, err := s.c.Status()
	if err != nil {
		return nil, toStatus(err, "")
	}
	applied, sum, n, err := s.c.Digest()
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.StoreDigestResponse{NodeId: st.NodeID, AppliedIndex: applied, Sha256: sum, Records: uint64(n)}, nil
}

// Operations is the part of coordinator.Coordinator the operator RPCs use.
type Operations interface {
	ListTransactions(f coordinator.TxFilter) ([]*coordinator.TxInfo, bool, error)
	Plan(ctx context.Context, foreign bool) (coordinator.RecoveryPlan, error)
	RecoveryPass(ctx context.Context, dryRun bool) (coordinator.RecoveryPlan, error)
	Resolve(ctx context.Context, txid string, commit bool, reason, actor string, force bool) (*coordinator.TxInfo, *wal.AuditEntry, error)
	MarkDone(ctx context.Context, txid, reason, actor string) (*coordinator.TxInfo, *wal.AuditEntry, error)
	Audit(q wal.AuditQuery) ([]wal.AuditEntry, wal.AuditVerdict, error)
	SaveSnapshot(w io.Writer) (int64, error)
	RestoreSnapshot(r io.Reader, actor string) (int, error)
	Serving() error
}

func (s *AdminServer) ops() (Operations, error) {
	o, ok := s.c.(Operations)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "operator commands are not available on this server")
	}
	return o, nil
}

func (s *AdminServer) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	if err := o.Serving(); err != nil {
		return nil, toStatus(err, "")
	}
	f := coordinator.TxFilter{State: req.GetState(), Participant: req.GetParticipant(), Label: req.GetLabel(),
		Sort: req.GetSort(), Limit: int(req.GetLimit())}
	if req.GetMinAge() != nil {
		f.MinAge = req.GetMinAge().AsDuration()
	}
	infos, truncated, err := o.ListTransactions(f)
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &pb.ListTransactionsResponse{Truncated: truncated}
	for _, i := range infos {
		resp.Transactions = append(resp.Transactions, txInfo(i))
	}
	return resp, nil
}

var actionToProto = map[coordinator.Action]pb.PlannedAction{
	coordinator.ActCommit: pb.PlannedAction_WILL_COMMIT, coordinator.ActRollBack: pb.PlannedAction_WILL_ROLL_BACK,
	coordinator.ActLeftAlone: pb.PlannedAction_LEFT_ALONE, coordinator.ActInProgress: pb.PlannedAction_IN_PROGRESS,
}

func (s *AdminServer) InDoubt(ctx context.Context, _ *pb.InDoubtRequest) (*pb.InDoubtResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	if err := o.Serving(); err != nil {
		return nil, toStatus(err, "")
	}
	plan, err := o.Plan(ctx, true)
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &pb.InDoubtResponse{Unreachable: map[string]string{}}
	now := time.Now()
	for _, a := range plan.Actions {
		b := &pb.InDoubtBranch{Participant: a.Participant, Gid: a.GID, Txid: a.TxID, Ours: a.Ours, Decision: a.Decision,
			Heuristic: a.Heuristic, Action: actionToProto[a.Action], Reason: a.Reason, Locks: a.Locks}
		if !a.PreparedAt.IsZero() {
			b.PreparedAt = timestamppb.New(a.PreparedAt)
			b.Age = durationpb.New(now.Sub(a.PreparedAt))
		}
		resp.Branches = append(resp.Branches, b)
	}
	for _, rec := range plan.Undone {
		t := &pb.Transaction{Txid: rec.TxID, Outcome: outcomeOf(rec), Heuristic: rec.Heuristic, Labels: rec.Labels,
			State: pb.TransactionState_COMMITTING, Error: rec.Reason}
		if rec.Outcome != wal.OutcomeCommit {
			t.State = pb.TransactionState_ABORTING
		}
		if rec.CreatedMs > 0 {
			t.CreatedAt = timestamppb.New(time.UnixMilli(rec.CreatedMs))
		}
		for _, a := range plan.Actions {
			if a.TxID == rec.TxID {
				st := pb.BranchState_BRANCH_PREPARED
				if a.NotPrepared {
					st = pb.BranchState_BRANCH_STATE_UNSPECIFIED // not prepared any more: applied or gone
				}
				t.Branches = append(t.Branches, &pb.Branch{Participant: a.Participant, Gid: a.GID, State: st, Vote: "YES"})
			}
		}
		resp.Undone = append(resp.Undone, t)
	}
	for name, e := range plan.Unreachable {
		resp.Unreachable[name] = e.Error()
	}
	return resp, nil
}

// actorOf names who asked: the authenticated client when access control
// is on (a claimed name is kept beside it, never instead of it), else the
// name the client claims, else "admin-api".
func actorOf(ctx context.Context, claimed string) string {
	if c, ok := security.CallerFrom(ctx); ok {
		if claimed != "" && claimed != c.Name {
			return c.Name + " (claims " + claimed + ")"
		}
		return c.Name
	}
	if claimed != "" {
		return claimed
	}
	return "admin-api"
}

func outcomeOf(rec *wal.Record) pb.Outcome {
	if rec.Outcome == wal.OutcomeCommit {
		return pb.Outcome_COMMITTED
	}
	return pb.Outcome_ABORTED
}

func (s *AdminServer) Recover(ctx context.Context, req *pb.RecoverRequest) (*pb.RecoverResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	if err := o.Serving(); err != nil {
		return nil, toStatus(err, "")
	}
	plan, perr := o.RecoveryPass(ctx, req.GetDryRun())
	if !req.GetDryRun() {
		n := 0
		for _, a := range plan.Actions {
			if a.Err == nil && (a.Action == coordinator.ActCommit || a.Action == coordinator.ActRollBack) {
				n++
			}
		}
		if a, ok := s.c.(interface {
			AuditAction(action, detail, actor string)
		}); ok {
			a.AuditAction("RECOVER", fmt.Sprintf("operator recovery pass: %d of %d actions applied", n, len(plan.Actions)), actorOf(ctx, ""))
		}
	}
	if perr != nil && len(plan.Actions) == 0 && len(plan.Unreachable) == 0 {
		return nil, toStatus(perr, "")
	}
	resp := &pb.RecoverResponse{DryRun: req.GetDryRun(), Unreachable: map[string]string{}}
	for _, a := range plan.Actions {
		ra := &pb.RecoveryAction{Participant: a.Participant, Gid: a.GID, Txid: a.TxID, Action: actionToProto[a.Action], Reason: a.Reason}
		if a.Err != nil {
			ra.Error = a.Err.Error()
		}
		resp.Actions = append(resp.Actions, ra)
	}
	for name, e := range plan.Unreachable {
		resp.Unreachable[name] = e.Error()
	}
	return resp, nil
}

func auditToProto(a wal.AuditEntry) *pb.AuditEntry {
	return &pb.AuditEntry{Seq: a.Seq, At: timestamppb.New(time.UnixMilli(a.AtMs)), Actor: a.Actor, Action: a.Action,
		Txid: a.TxID, Detail: a.Detail, Reason: a.Reason, PrevHash: a.PrevHash, Hash: a.Hash}
}

func (s *AdminServer) Resolve(ctx context.Context, req *pb.ResolveRequest) (*pb.ResolveResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	var commit bool
	switch req.GetOutcome() {
	case pb.Outcome_COMMITTED:
		commit = true
	case pb.Outcome_ABORTED:
	default:
		return nil, toStatus(fieldErr("outcome", "use COMMITTED or ABORTED"), req.GetTxid())
	}
	info, entry, err := o.Resolve(ctx, req.GetTxid(), commit, req.GetReason(), actorOf(ctx, req.GetActor()), req.GetForce())
	if err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	resp := &pb.ResolveResponse{Transaction: txInfo(info)}
	if entry != nil {
		resp.Audit = auditToProto(*entry)
	}
	return resp, nil
}

func (s *AdminServer) MarkDone(ctx context.Context, req *pb.MarkDoneRequest) (*pb.MarkDoneResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	info, entry, err := o.MarkDone(ctx, req.GetTxid(), req.GetReason(), actorOf(ctx, req.GetActor()))
	if err != nil {
		return nil, toStatus(err, req.GetTxid())
	}
	resp := &pb.MarkDoneResponse{Transaction: txInfo(info)}
	if entry != nil {
		resp.Audit = auditToProto(*entry)
	}
	return resp, nil
}

func (s *AdminServer) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	o, err := s.ops()
	if err != nil {
		return nil, err
	}
	// maxAuditList bounds one answer (every decision is an entry, so the
	// trail is long): the newest matches are returned.
	const maxAuditList = 10000
	limit := int(req.GetLimit())
	if limit > maxAuditList {
		return nil, toStatus(fieldErr("limit", "at most 10000"), "")
	}
	if limit == 0 {
		limit = maxAuditList
	}
	kind := req.GetKind()
	if kind != wal.KindAll && kind != wal.KindDecision && kind != wal.KindOperator {
		return nil, toStatus(fieldErr("kind", "use decision, operator or empty (all)"), "")
	}
	entries, v, err := o.Audit(wal.AuditQuery{Kind: kind, Action: req.GetAction(), TxID: req.GetTxid(), Seq: req.GetSeq(), Limit: limit})
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &pb.ListAuditResponse{Verified: v.OK, BrokenAtSeq: v.BrokenAt, Problem: v.Problem,
		Total: v.Entries, HeadSeq: v.HeadSeq, HeadHash: v.HeadHash, AnchorSeq: v.AnchorSeq, AnchorHash: v.AnchorHash}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, auditToProto(e))
	}
	return resp, nil
}

// chunkWriter sends a stream of SnapshotChunks (64 KiB each).
type chunkWriter struct {
	send func(*pb.SnapshotChunk) error
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 64<<10)
		if err := w.send(&pb.SnapshotChunk{Data: append([]byte(nil), p[:k]...)}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (s *AdminServer) SaveSnapshot(_ *pb.SaveSnapshotRequest, stream pb.Admin_SaveSnapshotServer) error {
	o, err := s.ops()
	if err != nil {
		return err
	}
	if _, err := o.SaveSnapshot(chunkWriter{send: stream.Send}); err != nil {
		return toStatus(err, "")
	}
	return nil
}

// maxRestoreBytes bounds an uploaded snapshot.
const maxRestoreBytes = 4 << 30

type chunkReader struct {
	recv func() (*pb.SnapshotChunk, error)
	buf  []byte
	n    int64
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		c, err := r.recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		r.buf = c.GetData()
	}
	k := copy(p, r.buf)
	r.buf = r.buf[k:]
	r.n += int64(k)
	if r.n > maxRestoreBytes {
		return k, fmt.Errorf("snapshot larger than %d bytes", int64(maxRestoreBytes))
	}
	return k, nil
}

func (s *AdminServer) RestoreSnapshot(stream pb.Admin_RestoreSnapshotServer) error {
	o, err := s.ops()
	if err != nil {
		return err
	}
	claimed := ""
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok && len(md.Get("txcoord-actor")) > 0 {
		claimed = md.Get("txcoord-actor")[0]
	}
	actor := actorOf(stream.Context(), claimed)
	n, err := o.RestoreSnapshot(&chunkReader{recv: stream.Recv}, actor)
	if err != nil {
		return toStatus(err, "")
	}
	return stream.SendAndClose(&pb.RestoreSnapshotResponse{Decisions: uint64(n)})
}
