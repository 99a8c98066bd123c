package txctl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/internal/devcerts"
	"github.com/txcoord/txcoord/internal/txctl"
	"github.com/txcoord/txcoord/security"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// A coordinator killed after both branches prepared but before the decision
// comes back while both databases are down. txctl shows what is in doubt as
// the participants come back one by one, plans the presumed abort, and
// resolves it once every participant is reachable.
func TestInDoubtPresumedAbortRecoveredAfterHeal(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeOpts{slowElection: true})
	p, sdb := pgPool(t), surreal(t)
	key := uniq("order-")
	txid := crashInDoubt(t, n, "before-decision", key)
	if got := pgPrepared(t, p, n.gidPrefix()); got != 1 {
		t.Fatalf("want 1 prepared PostgreSQL branch after the kill, got %d", got)
	}

	restartCut(n, n.pgProxy, n.surProxy)
	run := func(args ...string) result { return txctlRun(t, n.addr, args...) }
	// The cluster itself is fine: a ready leader (its start-up recovery
	// could not reach the databases, and it serves anyway).
	run("cluster", "status").want(t, txctl.ExitOK).contains(t, "health: ok")

	// Both participants down: nothing can be listed; both are reported.
	r := run("in-doubt", "--ours").want(t, txctl.ExitInDoubt)
	r.contains(t, "UNREACHABLE PARTICIPANTS", "pg", "surreal")
	j := run("in-doubt", "-o", "json").want(t, txctl.ExitInDoubt).json(t)
	if u, _ := j["unreachable"].(map[string]any); len(u) != 2 {
		t.Fatalf("want pg and surreal unreachable, got %v", j["unreachable"])
	}

	// SurrealDB back: its prepared branch is listed with its locks and age,
	// and the plan is presumed abort.
	n.surProxy.Heal()
	var sb map[string]any
	eventually(t, 20*time.Second, "surreal branch listed", func() bool {
		j := run("in-doubt", "-o", "json").json(t)
		sb = branchesOf(j, txid)["surreal"]
		return sb != nil
	})
	if sb["action"] != "WILL_ROLL_BACK" || sb["decision"] != "NONE" || sb["ours"] != true {
		t.Fatalf("surreal branch: want ours, decision NONE, WILL_ROLL_BACK; got %v", sb)
	}
	if !strings.Contains(sb["reason"].(string), "presumed abort") {
		t.Errorf("reason should say presumed abort: %v", sb["reason"])
	}
	if locks, _ := sb["locks"].([]any); len(locks) == 0 || !strings.Contains(locks[0].(string), key) {
		t.Errorf("surreal branch should hold the lock of txctl_kv:%s, got %v", key, sb["locks"])
	}
	if sb["age"] == nil || sb["age"] == "0s" {
		t.Errorf("surreal branch should have an age, got %v", sb["age"])
	}
	r = run("in-doubt", "--ours").want(t, txctl.ExitInDoubt)
	r.contains(t, txid, "WILL_ROLL_BACK", "no commit decision in the log: presumed abort", key)

	// The plan: roll back the SurrealDB branch; PostgreSQL cannot be listed.
	r = run("recover", "--dry-run").want(t, txctl.ExitInDoubt)
	r.contains(t, "dry run", txid, "WILL_ROLL_BACK", "planned", "presumed abort", "UNREACHABLE")
	if surrealIntents(t, sdb, n.gidPrefix()) == 0 {
		t.Fatal("recover --dry-run changed something: the SurrealDB intent is gone")
	}

	// PostgreSQL back too: both branches are planned, and recover resolves them.
	n.pgProxy.Heal()
	eventually(t, 20*time.Second, "both branches listed", func() bool {
		return len(branchesOf(run("in-doubt", "-o", "json").json(t), txid)) == 2
	})
	run("in-doubt", "--ours").want(t, txctl.ExitInDoubt).contains(t, "pg", "surreal", "summary: 2 branches of ours in doubt")
	rj := run("recover", "--dry-run", "-o", "json").want(t, txctl.ExitInDoubt).json(t)
	if acts := list(rj, "actions"); len(acts) != 2 || acts[0]["action"] != "WILL_ROLL_BACK" || acts[1]["action"] != "WILL_ROLL_BACK" {
		t.Fatalf("plan: want two WILL_ROLL_BACK actions, got %v", rj["actions"])
	}
	r = run("recover").want(t, txctl.ExitOK)
	r.contains(t, "RECOVERY PASS", "summary: 2 done, 0 failed")
	run("in-doubt", "--ours").want(t, txctl.ExitOK).contains(t, "summary: 0 branches of ours in doubt")

	// The outcome: presumed abort, nothing visible anywhere.
	r = run("tx", "show", txid).want(t, txctl.ExitOK)
	r.contains(t, "ABORTED", "presumed   YES")
	tj := run("tx", "show", txid, "-o", "json").want(t, txctl.ExitOK).json(t)
	if tj["outcome"] != "ABORTED" || tj["presumed"] != true || tj["heuristic"] != false {
		t.Fatalf("tx show: want ABORTED, presumed, not heuristic; got %v", tj)
	}
	run("tx", "wait", txid, "--timeout", "10s").want(t, txctl.ExitOK).contains(t, "ABORTED")
	if pgPrepared(t, p, n.gidPrefix()) != 0 || surrealIntents(t, sdb, n.gidPrefix()) != 0 {
		t.Fatal("branches left prepared after recover")
	}
	if pgValue(t, p, key) != nil || surrealValue(t, sdb, key) != nil {
		t.Fatal("the aborted transaction's writes are visible")
	}
	run("cluster", "status").want(t, txctl.ExitOK).contains(t, "health: ok", "LEADER")

	// A transaction this node ran itself: its timeline with timestamps, each
	// branch's vote and state.
	key2 := uniq("order-")
	tx2, err := writeBoth(context.Background(), t, n.client(), key2, "v2")
	if err != nil {
		t.Fatalf("commit after recovery: %v", err)
	}
	r = run("tx", "show", tx2.ID()).want(t, txctl.ExitOK)
	r.contains(t, "COMMITTED", "BRANCH_OPENED", "COMMIT_REQUESTED", "VOTE", "DECISION", "COMMIT logged at raft index")
	tj = run("tx", "show", tx2.ID(), "-o", "json").want(t, txctl.ExitOK).json(t)
	if bs := list(tj, "branches"); len(bs) != 2 || bs[0]["vote"] != "YES" || bs[0]["state"] != "BRANCH_COMMITTED" {
		t.Fatalf("tx show: want two committed branches that voted YES, got %v", tj["branches"])
	}
	if tl := list(tj, "timeline"); len(tl) < 5 || tl[0]["at"] == nil {
		t.Fatalf("tx show: want a timeline with timestamps, got %v", tj["timeline"])
	}
	run("tx", "list", "--participant", "pg", "--label", "order="+key2).want(t, txctl.ExitOK).contains(t, tx2.ID(), "pg:COMMITTED,surreal:COMMITTED")
}

// A coordinator killed right after logging COMMIT comes back while both
// databases are down; they come back but recovery has not run yet. txctl
// shows the undone COMMIT and plans it; resolve refuses to roll it back
// (exit 4) until --force, which records a HEURISTIC rollback that tx show,
// tx list and the audit trail show as such. Then: snapshot save/restore on
// the live node, and inspect of the stopped node's data dir (read-only; an
// audit entry edited in the file is detected and named).
func TestResolveForceHeuristicAuditSnapshotInspect(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeOpts{slowElection: true})
	p, sdb := pgPool(t), surreal(t)
	key := uniq("order-")
	txid := crashInDoubt(t, n, "after-decision", key)
	restartCut(n, n.pgProxy, n.surProxy)
	run := func(args ...string) result { return txctlRun(t, n.addr, args...) }

	// The start-up recovery could not reach either database.
	r := run("in-doubt", "--ours").want(t, txctl.ExitInDoubt)
	r.contains(t, txid, "COMMIT", "WILL_COMMIT", "the log says COMMIT", "UNREACHABLE")
	n.pgProxy.Heal()
	n.surProxy.Heal()
	eventually(t, 20*time.Second, "participants reachable", func() bool {
		j := run("in-doubt", "-o", "json").json(t)
		u, _ := j["unreachable"].(map[string]any)
		return len(u) == 0
	})
	j := run("in-doubt", "--ours", "-o", "json").want(t, txctl.ExitInDoubt).json(t)
	undone := list(j, "undone")
	if len(undone) != 1 {
		t.Fatalf("want 1 undone decision, got %v", j["undone"])
	}
	if d := undone[0]["decision"].(map[string]any); d["txid"] != txid || d["outcome"] != "COMMITTED" {
		t.Fatalf("undone decision: want %s COMMITTED, got %v", txid, d)
	}
	bs := branchesOf(j, txid)
	if len(bs) != 2 || bs["pg"]["action"] != "WILL_COMMIT" || bs["surreal"]["action"] != "WILL_COMMIT" {
		t.Fatalf("want pg and surreal WILL_COMMIT, got %v", bs)
	}
	run("in-doubt", "--ours").want(t, txctl.ExitInDoubt).contains(t, "UNDONE DECISIONS", txid, "WILL_COMMIT")
	run("recover", "--dry-run").want(t, txctl.ExitInDoubt).contains(t, "WILL_COMMIT", "planned", "the log says COMMIT (raft index")
	run("tx", "show", txid).want(t, txctl.ExitOK).contains(t, "COMMITTING", "heuristic  no")
	run("tx", "list", "--state", "COMMITTING", "--min-age", "1s").want(t, txctl.ExitOK).contains(t, txid, "pg:PREPARED,surreal:PREPARED")

	// Rolling back a logged COMMIT is refused, and changes nothing.
	reason := "payments confirmed the order was cancelled (INC-4711)"
	r = run("resolve", txid, "--rollback", "--reason", reason).want(t, txctl.ExitRefused)
	r.contains(t, "refused", "COMMIT decision", "--force", "nothing was changed")
	if tj := run("tx", "show", txid, "-o", "json").json(t); tj["outcome"] != "COMMITTED" || tj["heuristic"] != false {
		t.Fatalf("a refused resolve changed the transaction: %v", tj)
	}
	if pgPrepared(t, p, n.gidPrefix()) != 1 {
		t.Fatal("a refused resolve touched the PostgreSQL branch")
	}
	run("resolve", txid, "--commit").want(t, txctl.ExitUsage)

	// With --force: a heuristic rollback, driven to both branches at once.
	r = run("resolve", txid, "--rollback", "--reason", reason, "--force").want(t, txctl.ExitOK)
	r.contains(t, "logged a HEURISTIC ROLLBACK", "FORCED over the logged COMMIT decision", "heuristic  YES")
	tj := run("tx", "show", txid, "-o", "json").want(t, txctl.ExitOK).json(t)
	if tj["outcome"] != "ABORTED" || tj["heuristic"] != true || tj["state"] != "ABORTED_STATE" {
		t.Fatalf("tx show after resolve --force: want ABORTED, heuristic; got %v", tj)
	}
	run("tx", "show", txid).want(t, txctl.ExitOK).contains(t, "heuristic  YES: the outcome was set by an operator")
	lj := run("tx", "list", "--label", "order="+key, "-o", "json").want(t, txctl.ExitOK).json(t)
	if txs := list(lj, "transactions"); len(txs) != 1 || txs[0]["heuristic"] != true {
		t.Fatalf("tx list --label order=%s: want the heuristic transaction, got %v", key, lj["transactions"])
	}
	run("tx", "list", "--label", "order="+key).want(t, txctl.ExitOK).contains(t, txid, "HEURISTIC")
	run("in-doubt", "--ours").want(t, txctl.ExitOK)
	if pgPrepared(t, p, n.gidPrefix()) != 0 || surrealIntents(t, sdb, n.gidPrefix()) != 0 {
		t.Fatal("branches left prepared after resolve --force")
	}
	if pgValue(t, p, key) != nil || surrealValue(t, sdb, key) != nil {
		t.Fatal("the heuristically rolled back transaction is visible")
	}

	// The audit trail: who, when, why; the chain verifies.
	actor := txctl.DefaultActor()
	aj := run("audit", "list", "--txid", txid, "--kind", "operator", "-o", "json").want(t, txctl.ExitOK).json(t)
	entries := list(aj, "entries")
	if len(entries) != 1 || entries[0]["action"] != "RESOLVE" || entries[0]["actor"] != actor || entries[0]["reason"] != reason ||
		!strings.Contains(entries[0]["detail"].(string), "FORCED over the logged COMMIT decision") {
		t.Fatalf("audit entry: want RESOLVE by %s with the reason and FORCED, got %v", actor, aj["entries"])
	}
	// The logged COMMIT decision is an entry too (kind decision), before it.
	dj := run("audit", "list", "--txid", txid, "--kind", "decision", "-o", "json").want(t, txctl.ExitOK).json(t)
	if ds := list(dj, "entries"); len(ds) != 1 || ds[0]["action"] != "DECISION" || ds[0]["actor"] != "coordinator" ||
		!strings.HasPrefix(ds[0]["detail"].(string), "COMMIT [pg,surreal] term ") || ds[0]["seq"] != float64(1) {
		t.Fatalf("decision entry: want seq 1 DECISION COMMIT [pg,surreal] by coordinator, got %v", dj["entries"])
	}
	run("audit", "list").want(t, txctl.ExitOK).contains(t, "DECISION", "RESOLVE", actor, "audit chain: verified")
	ro := run("audit", "list", "--kind", "operator").want(t, txctl.ExitOK)
	ro.contains(t, "RESOLVE")
	ro.notContains(t, "DECISION")
	run("audit", "list", "--kind", "bogus").want(t, txctl.ExitUsage)
	run("audit", "verify").want(t, txctl.ExitOK).contains(t, "audit chain: verified (2 entries")

	// Snapshot round trip on the live node.
	snap := t.TempDir() + "/decisions.snap"
	r = run("snapshot", "save", snap).want(t, txctl.ExitOK)
	r.contains(t, "saved the decision store of n1", "audit chain: verified")
	run("snapshot", "save", snap).want(t, txctl.ExitUsage).contains(t, "exists")
	sj := run("snapshot", "restore", snap, "-o", "json").want(t, txctl.ExitUsage).json(t)
	if sj["nothing_sent"] != true {
		t.Fatalf("restore without --yes must send nothing: %v", sj)
	}
	sj = run("snapshot", "restore", snap, "--yes", "-o", "json").want(t, txctl.ExitOK).json(t)
	if sj["restored_decisions"] != sj["records"] || sj["records"].(float64) < 1 {
		t.Fatalf("restore: want every record of the file restored, got %v", sj)
	}
	run("tx", "show", txid).want(t, txctl.ExitOK).contains(t, "ABORTED", "heuristic  YES")
	run("audit", "list").want(t, txctl.ExitOK).contains(t, "SNAPSHOT_RESTORE", "audit chain: verified (3 entries")

	// inspect refuses a running node's store (its lock is held).
	run("inspect", "--data-dir", n.dataDir).want(t, txctl.ExitFailure).contains(t, "locked by a running process")

	// Offline, read-only: the files are byte-identical afterwards.
	n.stop()
	before := hashDir(t, n.dataDir)
	r = run("inspect", "--data-dir", n.dataDir).want(t, txctl.ExitOK)
	r.contains(t, "opened read-only", txid, "ABORT", "n1", n.addr, "RESOLVE", "SNAPSHOT_RESTORE", "audit chain: verified (3 entries")
	ij := run("inspect", "--data-dir", n.dataDir, "--txid", txid, "-o", "json").want(t, txctl.ExitOK).json(t)
	if recs := list(ij, "records"); len(recs) != 1 || recs[0]["heuristic"] != true || recs[0]["outcome"] != "ABORT" || recs[0]["done"] != true {
		t.Fatalf("inspect --txid: want the done heuristic ABORT record, got %v", ij["records"])
	}
	run("audit", "verify", "--data-dir", n.dataDir).want(t, txctl.ExitOK)
	if after := hashDir(t, n.dataDir); !equalHashes(before, after) {
		t.Fatalf("inspect modified the data dir:\nbefore %v\nafter  %v", before, after)
	}

	// Someone edits the RESOLVE entry's reason in the file: detected, named.
	editAuditReason(t, n.dataDir+"/decisions.db", 2, "nothing to see here")
	r = run("inspect", "--data-dir", n.dataDir).want(t, txctl.ExitInDoubt)
	r.contains(t, "audit chain: BROKEN at seq 2: entry content does not match its hash (edited?)", "nothing to see here")
	r = run("audit", "verify", "--data-dir", n.dataDir).want(t, txctl.ExitInDoubt)
	r.contains(t, "BROKEN at seq 2", "RESOLVE")
	vj := run("audit", "verify", "--data-dir", n.dataDir, "-o", "json").want(t, txctl.ExitInDoubt).json(t)
	if vj["verified"] != false || vj["broken_at_seq"] != float64(2) {
		t.Fatalf("audit verify json: want broken at seq 2, got %v", vj)
	}
	// A decision entry edited (COMMIT → ABORT) is detected the same way.
	editAuditReason(t, n.dataDir+"/decisions.db", 2, reason) // put the reason back
	editAuditDetail(t, n.dataDir+"/decisions.db", 1)
	run("audit", "verify", "--data-dir", n.dataDir).want(t, txctl.ExitInDoubt).contains(t, "BROKEN at seq 1", "DECISION")

}

// The heuristic hazard, refused: a coordinator killed after PostgreSQL
// committed and before SurrealDB did. An operator who forces a rollback now
// would leave a mixed outcome (PostgreSQL's commit cannot be undone), so
// resolve refuses even with --force (exit 4), nothing is audited as
// resolved, and recover finishes the logged commit on SurrealDB.
func TestForcedRollbackAfterPartialCommitIsRefused(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeOpts{slowElection: true})
	p, sdb := pgPool(t), surreal(t)
	key := uniq("order-")
	txid := crashInDoubt(t, n, "mid-commit", key)
	restartCut(n, n.surProxy)
	run := func(args ...string) result { return txctlRun(t, n.addr, args...) }

	n.surProxy.Heal()
	eventually(t, 20*time.Second, "surreal reachable", func() bool {
		u, _ := run("in-doubt", "-o", "json").json(t)["unreachable"].(map[string]any)
		return len(u) == 0
	})
	if pgValue(t, p, key) != "v" {
		t.Fatal("setup: want the PostgreSQL branch committed")
	}
	if surrealValue(t, sdb, key) == nil {
		// Recovery may not have reached SurrealDB yet: then the undone
		// decision shows, with PostgreSQL's branch no longer prepared.
		run("in-doubt", "--ours").contains(t, txid)
	}

	reason := "rollback requested before checking the databases"
	r := run("resolve", txid, "--rollback", "--reason", reason, "--force").want(t, txctl.ExitRefused)
	r.contains(t, "already applied")
	run("audit", "list", "--txid", txid).notContains(t, "RESOLVE")

	eventually(t, 20*time.Second, "the logged commit finished on SurrealDB", func() bool {
		run("recover")
		return surrealValue(t, sdb, key) != nil
	})
	run("tx", "wait", txid).want(t, txctl.ExitOK).contains(t, "COMMITTED")
	if pgValue(t, p, key) != "v" || surrealValue(t, sdb, key) == nil {
		t.Fatal("want the transaction committed in both stores")
	}
}

// A logged COMMIT whose PostgreSQL branch a DBA rolled back by hand cannot
// be carried out: recovery keeps it undone (the branch's receipt, its xid,
// says aborted) and txctl in-doubt shows it. Once the data is repaired,
// txctl mark-done closes it, audited as MARK_DONE; in-doubt no longer shows
// it and asking again changes nothing.
func TestMarkDoneAfterBranchLostByHand(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeOpts{slowElection: true})
	p, sdb := pgPool(t), surreal(t)
	key := uniq("order-")
	txid := crashInDoubt(t, n, "after-decision", key) // both branches prepared, COMMIT logged
	restartCut(n, n.pgProxy)                          // recovery reaches SurrealDB only
	run := func(args ...string) result { return txctlRun(t, n.addr, args...) }
	gid := n.gidPrefix() + txid + ":pg"
	eventually(t, 20*time.Second, "the SurrealDB branch committed", func() bool {
		return surrealValue(t, sdb, key) != nil
	})
	// The DBA's mistake: the PostgreSQL branch is rolled back by hand.
	if _, err := p.Exec(context.Background(), "ROLLBACK PREPARED '"+gid+"'"); err != nil {
		t.Fatalf("ROLLBACK PREPARED %s: %v", gid, err)
	}
	n.pgProxy.Heal()
	eventually(t, 20*time.Second, "the undone decision shows, its branch no longer prepared", func() bool {
		r := run("in-doubt", "--ours")
		return strings.Contains(r.stdout, txid) && strings.Contains(r.stdout, "no longer prepared")
	})
	run("mark-done", txid).want(t, txctl.ExitUsage)
	// The data is repaired by hand, then the decision is closed.
	if _, err := p.Exec(context.Background(), "INSERT INTO txctl_kv (k, v) VALUES ($1, 'v')", key); err != nil {
		t.Fatal(err)
	}
	reason := "pg row re-applied by hand after the accidental ROLLBACK PREPARED"
	run("mark-done", txid, "--reason", reason).want(t, txctl.ExitOK).contains(t, "marked "+txid+" done", reason, "COMMITTED")
	run("in-doubt", "--ours").notContains(t, txid)
	run("audit", "list", "--txid", txid, "--action", "MARK_DONE").want(t, txctl.ExitOK).contains(t, "MARK_DONE", reason)
	run("mark-done", txid, "--reason", "again").want(t, txctl.ExitOK).contains(t, "already done")
	if pgValue(t, p, key) != "v" || surrealValue(t, sdb, key) == nil {
		t.Fatal("want the repaired value in both stores")
	}
}

// Membership through txctl on a real 3-node cluster: add voters, transfer
// leadership (asked through a follower), remove a member, and a degraded
// status (exit 5) when a member is down.
func TestClusterMembership(t *testing.T) {
	t.Parallel()
	cluster := uniqueClusterID()
	n1 := newNode(t, nodeOpts{id: "n1", clusterID: cluster})
	n2 := newNode(t, nodeOpts{id: "n2", clusterID: cluster, noBootstrap: true})
	n3 := newNode(t, nodeOpts{id: "n3", clusterID: cluster, noBootstrap: true})
	n1.start(startOpts{})
	n2.start(startOpts{follower: true})
	n3.start(startOpts{follower: true})
	run := func(addr string, args ...string) result { return txctlRun(t, addr, args...) }

	run(n1.addr, "cluster", "status").want(t, txctl.ExitOK).contains(t, "leader n1", "1 member")
	run(n1.addr, "cluster", "add-voter", "n2").want(t, txctl.ExitUsage).contains(t, "required flag")
	run(n1.addr, "cluster", "add-voter", "n2", "--raft", n2.raftAddr, "--grpc", n2.addr).want(t, txctl.ExitOK).contains(t, "added n2 as a voter")
	run(n1.addr, "cluster", "add-voter", "n3", "--raft", n3.raftAddr, "--grpc", n3.addr).want(t, txctl.ExitOK)
	eventually(t, 20*time.Second, "3 healthy members", func() bool {
		return run(n1.addr, "cluster", "status").code == txctl.ExitOK
	})
	j := run(n1.addr, "cluster", "status", "-o", "json").want(t, txctl.ExitOK).json(t)
	if ms := list(j, "members"); len(ms) != 3 || j["healthy"] != true {
		t.Fatalf("want 3 healthy members, got %v", j)
	}

	// Asked through n3 (a follower): the client follows the redirect.
	run(n3.addr, "cluster", "transfer-leader", "n2").want(t, txctl.ExitOK).contains(t, "leadership transferred to n2")
	eventually(t, 20*time.Second, "n2 leads and is ready", func() bool {
		r := run(n1.addr, "cluster", "status")
		return r.code == txctl.ExitOK && strings.Contains(r.stdout, "leader n2")
	})
	run(n1.addr, "cluster", "remove", "n3").want(t, txctl.ExitOK).contains(t, "removed n3")
	eventually(t, 20*time.Second, "2 members", func() bool {
		ms := list(run(n2.addr, "cluster", "status", "-o", "json").json(t), "members")
		return len(ms) == 2
	})
	run(n1.addr, "audit", "list", "--action", "MEMBER_ADD").want(t, txctl.ExitOK).contains(t, "voter n2", "voter n3")

	// n1 down: the status from n2 names it and exits 5.
	n1.stop()
	r := run(n2.addr, "cluster", "status").want(t, txctl.ExitDegraded)
	r.contains(t, "health: DEGRADED", "n1 unreachable")
}

// TLS and tokens: against a node with mutual TLS and access control, txctl
// gets through with an admin client certificate, and is refused with a
// certificate whose client may not call the Admin service or without one;
// against a loopback node with tokens, --token-file authenticates.
func TestTLSAndTokenAuth(t *testing.T) {
	t.Parallel()
	needDBs(t)
	dir := t.TempDir()
	ca, err := devcerts.NewCA("txctl test CA")
	if err != nil {
		t.Fatal(err)
	}
	nodeID, _ := ca.WritePeer(filepath.Join(dir, "n1"), "n1")
	ops, _ := ca.WriteClient(filepath.Join(dir, "ops"), "ops")
	app, _ := ca.WriteClient(filepath.Join(dir, "app"), "app")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("ops s3cret-ops-0123456789\napp s3cret-app-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`auth:
  tokens_file: %q
  clients:
    - {name: ops, admin: true}
    - {name: app, coordinator: true, participants: ["*"]}
`, tokens)

	// Mutual TLS.
	tn := newNode(t, nodeOpts{extraYAML: fmt.Sprintf("tls: {cert_file: %q, key_file: %q, ca_file: %q}\n", nodeID.Cert, nodeID.Key, nodeID.CA) + policy})
	r, err := security.NewReloader(security.TLSFiles{CertFile: ops.Cert, KeyFile: ops.Key, CAFile: ops.CA})
	if err != nil {
		t.Fatal(err)
	}
	tn.start(startOpts{dial: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(r.ClientConfig("")))}})
	tlsArgs := func(f devcerts.Files, args ...string) []string {
		return append([]string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}, args...)
	}
	txctlRun(t, tn.addr, tlsArgs(ops, "cluster", "status")...).want(t, txctl.ExitOK).contains(t, "health: ok")
	// Calls with no database I/O: their result does not depend on load.
	txctlRun(t, tn.addr, tlsArgs(ops, "tx", "list")...).want(t, txctl.ExitOK).contains(t, "0 transactions")
	txctlRun(t, tn.addr, tlsArgs(app, "in-doubt")...).want(t, txctl.ExitFailure).contains(t, "may not call the Admin service", "admin: true")
	txctlRun(t, tn.addr, "--timeout", "5s", "in-doubt").want(t, txctl.ExitFailure)
	txctlRun(t, tn.addr, "--tls-ca", ops.CA, "--tls-cert", ops.Cert, "in-doubt").want(t, txctl.ExitUsage)

	// Tokens on loopback without TLS.
	pn := newNode(t, nodeOpts{extraYAML: policy})
	pn.start(startOpts{})
	opsTok, appTok := filepath.Join(dir, "ops.token"), filepath.Join(dir, "app.token")
	os.WriteFile(opsTok, []byte("s3cret-ops-0123456789\n"), 0o600)
	os.WriteFile(appTok, []byte("s3cret-app-0123456789\n"), 0o600)
	txctlRun(t, pn.addr, "--token-file", opsTok, "audit", "verify").want(t, txctl.ExitOK).contains(t, "audit chain: verified")
	txctlRun(t, pn.addr, "--token-file", appTok, "recover", "--dry-run").want(t, txctl.ExitFailure).contains(t, "PermissionDenied")
	txctlRun(t, pn.addr, "recover", "--dry-run").want(t, txctl.ExitFailure).contains(t, "Unauthenticated", "--token-file")
	txctlRun(t, "10.1.2.3:7400", "--token-file", opsTok, "in-doubt").want(t, txctl.ExitUsage).contains(t, "unencrypted")
}
