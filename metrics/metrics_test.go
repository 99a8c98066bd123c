package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
)

func TestClass(t *testing.T) {
	cases := map[error]string{
		fmt.Errorf("x: %w: %w", participants.ErrVoteNo, participants.ErrConflict):   "conflict",
		fmt.Errorf("x: %w: %w", participants.ErrVoteNo, participants.ErrConstraint): "constraint",
		fmt.Errorf("x: %w", participants.ErrVoteNo):                                 "no_vote",
		fmt.Errorf("x: %w", participants.ErrAmbiguous):                              "ambiguous",
		fmt.Errorf("x: %w", participants.ErrUnavailable):                            "unavailable",
		fmt.Errorf("x: %w", participants.ErrUnsupported):                            "bad_request",
		errors.New("boom"): "other",
	}
	for err, want := range cases {
		if got := Class(err); got != want {
			t.Errorf("Class(%v) = %s, want %s", err, got, want)
		}
	}
}

// registered returns every metric family name after touching each vector.
func registered(t *testing.T) map[string]bool {
	m := New()
	m.GaugeFunc("txcoord_active_transactions", "x", func() float64 { return 0 })
	for _, n := range []string{"txcoord_ready", "txcoord_raft_state", "txcoord_raft_term", "txcoord_raft_commit_index",
		"txcoord_raft_applied_index", "txcoord_raft_apply_lag"} {
		m.GaugeFunc(n, "x", func() float64 { return 0 })
	}
	m.TransactionFinished("committed", map[string]string{"pg": "committed"})
	m.PhaseTwoRetry("pg")
	m.InDoubt(1, time.Second)
	m.RecoveryAction("will_commit", nil)
	m.ConfigReloaded(true)
	m.CommitFinished("committed", 3*time.Millisecond)
	m.FlightApplied(3, time.Millisecond, 2*time.Millisecond)
	m.observe("prepare", "pg", time.Now(), errors.New("x"))
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.GetName()] = true
	}
	return out
}

// docs/observability.md lists every txcoord metric, and the dashboard only
// queries metrics that exist: neither can drift from the code unnoticed.
func TestDocsAndDashboardMatchMetrics(t *testing.T) {
	have := registered(t)
	doc, err := os.ReadFile("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(txcoord_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for name := range have {
		base := strings.TrimSuffix(name, "_total")
		if strings.HasPrefix(name, "txcoord_") && !documented[name] && !documented[base] {
			t.Errorf("metric %s is not in docs/observability.md", name)
		}
	}
	for name := range documented {
		if !have[name] {
			t.Errorf("docs/observability.md lists %s, which does not exist", name)
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	b, err := os.ReadFile("../docs/grafana/txcoord.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`txcoord_[a-z_]+`).FindAllString(tg.Expr, -1) {
				for _, series := range []string{"_bucket", "_count", "_sum"} { // a histogram's series
					m = strings.TrimSuffix(m, series)
				}
				if !have[m] {
					t.Errorf("dashboard queries %s, which does not exist", m)
				}
			}
		}
	}
}
