package console

import (
	"fmt"
	"sort"
	"strings"
	"time"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Text for the templates; txctl prints the same names.

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func tsText(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func durText(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// agoText is how long ago t was ("-" when unset).
func agoText(t *timestamppb.Timestamp) string {
	if t == nil || t.AsTime().IsZero() || t.AsTime().Unix() <= 0 {
		return "-"
	}
	return durText(time.Since(t.AsTime()).Round(time.Millisecond))
}

// elapsedText is the time from first to t, as "+1.234s".
func elapsedText(first, t *timestamppb.Timestamp) string {
	if first == nil || t == nil {
		return ""
	}
	return "+" + durText(t.AsTime().Sub(first.AsTime()))
}

func shortText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// stateText names a transaction state as txctl does (COMMITTED, not
// COMMITTED_STATE).
func stateText(s pb.TransactionState) string { return strings.TrimSuffix(s.String(), "_STATE") }

func branchText(s pb.BranchState) string { return strings.TrimPrefix(s.String(), "BRANCH_") }

func labelsText(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func decisionText(d string, heuristic bool) string {
	if heuristic {
		return d + " (HEURISTIC)"
	}
	return d
}

// loggedDecision names an outcome as the decision log does (COMMIT, ABORT),
// as txctl in-doubt prints undone decisions.
func loggedDecision(o pb.Outcome) string {
	switch o {
	case pb.Outcome_COMMITTED:
		return "COMMIT"
	case pb.Outcome_ABORTED:
		return "ABORT"
	}
	return o.String()
}
