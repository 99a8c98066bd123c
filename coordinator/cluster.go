package coordinator

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/wal"
)

// Member is one server of the Raft configuration.
type Member struct {
	ID          string
	RaftAddress string
	GRPCAddress string
	Suffrage    string // VOTER, NONVOTER, STAGING
	Role        string // LEADER, FOLLOWER
}

// ClusterStatus is this node's view of the cluster.
type ClusterStatus struct {
	NodeID            string
	State             string
	Term              uint64
	CommitIndex       uint64
	AppliedIndex      uint64
	LastLogIndex      uint64
	LastSnapshotIndex uint64
	LeaderID          string
	LeaderGRPCAddress string
	LastContact       time.Time
	Members           []Member
	Ready             bool
	Decisions         int
}

// membershipTimeout bounds one configuration change (a new voter must catch up).
const membershipTimeout = 30 * time.Second

// Status reports the cluster as this node sees it. Safe on any node.
func (c *Coordinator) Status() (ClusterStatus, error) {
	st := ClusterStatus{
		NodeID: c.cfg.NodeID, State: c.raft.State().String(), Term: c.raft.CurrentTerm(),
		CommitIndex: c.raft.CommitIndex(), AppliedIndex: c.raft.AppliedIndex(), LastLogIndex: c.raft.LastIndex(),
		LastContact: c.raft.LastContact(), Ready: c.serving() == nil,
	}
	if v, err := strconv.ParseUint(c.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = v
	}
	_, leader := c.raft.LeaderWithID()
	st.LeaderID = string(leader)
	members, err := c.store.Members()
	if err != nil {
		return st, err
	}
	st.LeaderGRPCAddress = members[st.LeaderID]
	f := c.raft.GetConfiguration()
	if err := c.wait(f); err != nil {
		return st, fmt.Errorf("raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		m := Member{ID: string(s.ID), RaftAddress: string(s.Address), GRPCAddress: members[string(s.ID)], Role: "FOLLOWER"}
		switch s.Suffrage {
		case raft.Voter:
			m.Suffrage = "VOTER"
		case raft.Nonvoter:
			m.Suffrage = "NONVOTER"
		default:
			m.Suffrage = "STAGING"
		}
		if s.ID == leader {
			m.Role = "LEADER"
		}
		st.Members = append(st.Members, m)
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	if _, _, n, err := c.store.Digest(); err == nil {
		st.Decisions = n
	}
	return st, nil
}

func (c *Coordinator) mustLead() error {
	if c.raft.State() != raft.Leader {
		_, id := c.raft.LeaderWithID()
		return &NotLeaderError{LeaderID: string(id), LeaderAddr: c.memberAddr(string(id))}
	}
	return nil
}

// AddVoter adds a node as a voter (idempotent) and logs its gRPC address.
func (c *Coordinator) AddVoter(id, raftAddr, grpcAddr, actor string) error {
	if !ValidName(id) {
		return fieldErr("id", "%q: use 1-32 of [a-z0-9_-]", id)
	}
	if raftAddr == "" {
		return fieldErr("raft_address", "is empty: give the new node's Raft host:port")
	}
	if err := c.mustLead(); err != nil {
		return err
	}
	if grpcAddr != "" {
		if err := c.wait(c.raft.Apply(wal.Command{Type: wal.CmdMember, NodeID: id, Addr: grpcAddr}.Encode(), c.cfg.ApplyTimeout)); err != nil {
			return fmt.Errorf("%w: log member address: %v", ErrUnavailable, err)
		}
	}
	if err := c.wait(c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, membershipTimeout)); err != nil {
		return fmt.Errorf("%w: add voter %s: %v", ErrUnavailable, id, err)
	}
	c.log.Info("voter added", "node", id, "raft", raftAddr, "grpc", grpcAddr)
	c.audit("MEMBER_ADD", fmt.Sprintf("voter %s raft=%s grpc=%s", id, raftAddr, grpcAddr), actor)
	return nil
}

// RemoveServer removes a node from the cluster (idempotent). Removing the
// leader itself is allowed: it steps down after the change commits.
func (c *Coordinator) RemoveServer(id, actor string) error {
	if id == "" {
		return fieldErr("id", "is empty: name the node to remove")
	}
	if err := c.mustLead(); err != nil {
		return err
	}
	f := c.raft.GetConfiguration()
	if err := c.wait(f); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	found := false
	for _, s := range f.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if found {
		if err := c.wait(c.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout)); err != nil {
			return fmt.Errorf("%w: remove %s: %v", ErrUnavailable, id, err)
		}
		c.log.Info("server removed", "node", id)
		if c.raft.State() == raft.Leader {
			c.audit("MEMBER_REMOVE", "server "+id, actor)
		}
	}
	if c.raft.State() == raft.Leader {
		if err := c.wait(c.raft.Apply(wal.Command{Type: wal.CmdMember, NodeID: id}.Encode(), c.cfg.ApplyTimeout)); err != nil {
			c.log.Warn("could not forget member address", "node", id, "err", err)
		}
	}
	return nil
}

// TransferLeadership hands leadership to id, or to the most up-to-date voter
// when id is empty, and returns the new leader's id.
func (c *Coordinator) TransferLeadership(id, actor string) (string, error) {
	if err := c.mustLead(); err != nil {
		return "", err
	}
	// Audited before the transfer: afterwards this node can no longer log.
	target := id
	if target == "" {
		target = "(the most up-to-date voter)"
	}
	c.audit("LEADERSHIP_TRANSFER", "to "+target, actor)
	var f raft.Future
	if id == "" {
		f = c.raft.LeadershipTransfer()
	} else {
		addr := ""
		cf := c.raft.GetConfiguration()
		if err := c.wait(cf); err != nil {
			return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == id {
				addr = string(s.Address)
			}
		}
		if addr == "" {
			return "", fieldErr("id", "%q is not a member of the cluster", id)
		}
		if id == c.cfg.NodeID {
			return "", fieldErr("id", "%q already leads; name another voter, or none for the most up-to-date one", id)
		}
		f = c.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := c.wait(f); err != nil {
		return "", fmt.Errorf("%w: leadership transfer: %v", ErrUnavailable, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, leader := c.raft.LeaderWithID(); leader != "" && string(leader) != c.cfg.NodeID {
			c.log.Info("leadership transferred", "to", leader, "actor", actor)
			return string(leader), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", errors.New("leadership transfer started but no new leader within 10s")
}

// Digest hashes this node's decision store (see wal.Store.Digest).
func (c *Coordinator) Digest() (applied uint64, sum string, records int, err error) {
	return c.store.Digest()
}
