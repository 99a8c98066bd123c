// Package metrics holds txcoord's Prometheus metrics: one Metrics value per
// process, registered on its own registry (no global state), fed by the
// participant layer (observe.go) and the coordinator (through the
// coordinator.Observer interface it implements), and served over HTTP with
// the health endpoints (http.go). docs/observability.md lists every metric.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/txcoord/txcoord/participants"
)

// Metrics is the set of collectors of one process. Safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	transactions *prometheus.CounterVec   // outcome
	branches     *prometheus.CounterVec   // participant, outcome
	phase        *prometheus.HistogramVec // phase, participant
	commit       *prometheus.HistogramVec // outcome
	retries      *prometheus.CounterVec   // participant
	errs         *prometheus.CounterVec   // participant, phase, class
	inDoubt      prometheus.Gauge
	inDoubtAge   prometheus.Gauge
	recoveries   *prometheus.CounterVec // action
	reloads      *prometheus.CounterVec // result
	flightSize   prometheus.Histogram
	flightLinger prometheus.Histogram
	flightRaft   prometheus.Histogram
}

// latencyBuckets: 0.25 ms to ~8 s, doubling (phase latencies here are
// milliseconds; a stuck participant shows in the top buckets).
var latencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 16)

// New creates the collectors and registers them (plus Go and process
// collectors) on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_transactions_total", Help: "Transactions finished on this node, by outcome (committed, aborted, unknown).",
		}, []string{"outcome"}),
		branches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_branches_total", Help: "Branches finished on this node, by participant and outcome.",
		}, []string{"participant", "outcome"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "txcoord_phase_seconds", Help: "Latency of participant calls: begin, execute, prepare, commit_one_phase, commit, rollback, in_doubt, per participant.",
			Buckets: latencyBuckets,
		}, []string{"phase", "participant"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "txcoord_commit_seconds", Help: "Latency of commits on this node, from the client's Commit to the outcome, by outcome (committed, aborted, unknown).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_phase_two_retries_total", Help: "Phase-two calls that failed and were retried, by participant.",
		}, []string{"participant"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_participant_errors_total", Help: "Participant call errors by participant, phase and class (no_vote, conflict, constraint, unavailable, ambiguous, timeout, bad_request, other).",
		}, []string{"participant", "phase", "class"}),
		inDoubt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "txcoord_in_doubt_branches", Help: "Prepared branches of this cluster awaiting recovery at the last scan (leader only).",
		}),
		inDoubtAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "txcoord_in_doubt_oldest_seconds", Help: "Age of the oldest in-doubt branch at the last scan (0 when none).",
		}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_recovery_actions_total", Help: "Branches resolved by recovery, by action (commit, rollback) and result (ok, error).",
		}, []string{"action", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txcoord_config_reloads_total", Help: "Configuration reloads (SIGHUP, txctl reload) on this node, by result (applied, refused).",
		}, []string{"result"}),
		flightSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "txcoord_decision_flight_decisions", Help: "Decisions carried by each Raft entry of decisions (a flight) on the leader.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 … 256 (the flight bound)
		}),
		flightLinger: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "txcoord_decision_linger_seconds", Help: "Time each flight of decisions waited for transactions still preparing (decision_linger) before going to Raft.",
			Buckets: latencyBuckets,
		}),
		flightRaft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "txcoord_decision_raft_seconds", Help: "Time from a flight of decisions going to Raft to its entry being applied by the leader's FSM (log appends, replication, apply; not the decision store's commit).",
			Buckets: latencyBuckets,
		}),
	}
	m.Registry.MustRegister(m.transactions, m.branches, m.phase, m.commit, m.retries, m.errs, m.inDoubt, m.inDoubtAge, m.recoveries, m.reloads,
		m.flightSize, m.flightLinger, m.flightRaft,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ConfigReloaded counts a configuration reload, applied or refused.
func (m *Metrics) ConfigReloaded(applied bool) {
	result := "refused"
	if applied {
		result = "applied"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// GaugeFunc registers a gauge read at scrape time (active transactions,
// Raft state...).
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// TransactionFinished counts a transaction's outcome.
func (m *Metrics) TransactionFinished(outcome string, branches map[string]string) {
	m.transactions.WithLabelValues(outcome).Inc()
	for p, o := range branches {
		m.branches.WithLabelValues(p, o).Inc()
	}
}

// CommitFinished observes one commit's latency (coordinator.CommitObserver).
func (m *Metrics) CommitFinished(outcome string, took time.Duration) {
	m.commit.WithLabelValues(outcome).Observe(took.Seconds())
}

// FlightApplied observes one flight of decisions: its size, its linger
// and its Raft latency (coordinator.FlightObserver).
func (m *Metrics) FlightApplied(decisions int, lingered, raft time.Duration) {
	m.flightSize.Observe(float64(decisions))
	m.flightLinger.Observe(lingered.Seconds())
	m.flightRaft.Observe(raft.Seconds())
}

// PhaseTwoRetry counts one retried phase-two call.
func (m *Metrics) PhaseTwoRetry(participant string) { m.retries.WithLabelValues(participant).Inc() }

// InDoubt records the last recovery scan's in-doubt count and oldest age.
func (m *Metrics) InDoubt(n int, oldest time.Duration) {
	m.inDoubt.Set(float64(n))
	m.inDoubtAge.Set(oldest.Seconds())
}

// RecoveryAction counts a recovery action and its result.
func (m *Metrics) RecoveryAction(action string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.recoveries.WithLabelValues(action, result).Inc()
}

// observe records one participant call.
func (m *Metrics) observe(phase, participant string, start time.Time, err error) {
	m.phase.WithLabelValues(phase, participant).Observe(time.Since(start).Seconds())
	if err != nil {
		m.errs.WithLabelValues(participant, phase, Class(err)).Inc()
	}
}

// Class names an error's class at the participant boundary.
func Class(err error) string {
	switch {
	case errors.Is(err, participants.ErrAmbiguous):
		return "ambiguous"
	case errors.Is(err, participants.ErrConflict):
		return "conflict"
	case errors.Is(err, participants.ErrConstraint):
		return "constraint"
	case errors.Is(err, participants.ErrVoteNo):
		return "no_vote"
	case errors.Is(err, participants.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, participants.ErrTimeout):
		return "timeout"
	case errors.Is(err, participants.ErrBadOperation), errors.Is(err, participants.ErrUnsupported):
		return "bad_request"
	}
	return "other"
}
