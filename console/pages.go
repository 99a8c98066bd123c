package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/internal/opsreport"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// view is what every page template gets.
type view struct {
	Node     string // this node's id
	Title    string
	Nav      string
	Open     bool   // no access control: the banner says so
	User     string // who is signed in
	Token    bool   // signed in with a token (a sign-out button makes sense)
	CSRF     string
	Live     string // the fragment URL refreshed every Interval ms ("" for none)
	Interval int
	Now      time.Time
	Data     any
}

// livePage is a page whose main part (template "live") is refreshed in
// place, with the same data as JSON under /api/.
type livePage struct {
	name     string
	title    string
	interval time.Duration
	load     func(s *Server, ctx context.Context, q url.Values) (any, error)
	json     func(data any) any
}

var livePages = []livePage{
	{name: "cluster", title: "Cluster", interval: 2 * time.Second, load: (*Server).loadCluster, json: clusterJSON},
	{name: "transactions", title: "Transactions", interval: 2 * time.Second, load: (*Server).loadTransactions, json: txListJSON},
	{name: "in-doubt", title: "In doubt", interval: 5 * time.Second, load: (*Server).loadInDoubt, json: inDoubtJSON},
	{name: "audit", title: "Audit trail", interval: 5 * time.Second, load: (*Server).loadAudit, json: auditJSON},
	{name: "charts", title: "Charts", interval: 2 * time.Second, load: (*Server).loadCharts, json: chartsJSON},
}

// pageNames are the templates: one per page plus the shared layout.
var pageNames = []string{"cluster", "transactions", "transaction", "in-doubt", "apply", "audit", "charts", "login", "error"}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"ts":       tsText,
		"ago":      agoText,
		"age":      durText,
		"short":    shortText,
		"state":    stateText,
		"branch":   branchText,
		"labels":   labelsText,
		"decision": decisionText,
		"logged":   loggedDecision,
		"elapsed":  elapsedText,
		"join":     strings.Join,
		"lastRow":  func(first, n int) int { return first + n - 1 },
		"lower":    strings.ToLower,
		"actionClass": func(a pb.PlannedAction) string {
			return strings.ToLower(strings.ReplaceAll(a.String(), "_", "-"))
		},
		"stateClass": func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) },
	}
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render executes a page (template "layout") with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, page string, v view) {
	s.exec(w, r, code, page, "layout", v)
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request, code int, page, name string, v view) {
	id := identityFrom(r.Context())
	v.Open = s.cfg.Policy == nil && s.cfg.TLS == nil
	v.User = id.client
	if id.session != nil {
		v.CSRF = id.session.csrf
		v.Token = id.session.bearer != ""
	}
	v.Now = time.Now()
	if id.client != "" {
		v.Node = s.cfg.NodeID // not even the node's name before sign-in
	}
	var b strings.Builder
	if err := s.pages[page].ExecuteTemplate(&b, name, v); err != nil {
		// A template bug: say so without half a page.
		s.log.Error("console: render", "page", page, "err", err)
		http.Error(w, "console: the page could not be rendered (see the node's log)", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprint(w, b.String())
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.render(w, r, code, "error", view{Title: http.StatusText(code), Data: msg})
}

func callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	id := identityFrom(r.Context())
	return context.WithTimeout(id.caller(r.Context()), callTimeout)
}

func (s *Server) page(p livePage) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := callCtx(r)
		defer cancel()
		data, err := p.load(s, ctx, r.URL.Query())
		if err != nil {
			s.renderError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		live := "/fragment/" + p.name
		if q := r.URL.RawQuery; q != "" {
			live += "?" + q
		}
		s.render(w, r, http.StatusOK, p.name, view{Title: p.title, Nav: p.name, Live: live, Interval: int(p.interval / time.Millisecond), Data: data})
	}
}

func (s *Server) fragment(p livePage) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := callCtx(r)
		defer cancel()
		data, err := p.load(s, ctx, r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.exec(w, r, http.StatusOK, p.name, "live", view{Title: p.title, Nav: p.name, Data: data})
	}
}

func (s *Server) api(p livePage) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := callCtx(r)
		defer cancel()
		data, err := p.load(s, ctx, r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, p.json(data))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// pbJSON renders a protobuf message as the JSON txctl -o json prints.
func pbJSON(m proto.Message) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// unavailable is a backend error shown on the page instead of its data
// (the page itself loads): a follower names the leader, for example.
type unavailable struct {
	Message  string
	Follower bool
}

func asUnavailable(err error) *unavailable {
	st := status.Convert(err)
	return &unavailable{Message: st.Message(), Follower: st.Code() == codes.Unavailable && strings.Contains(st.Message(), "not the leader")}
}

// ---- cluster

type clusterData struct {
	Report opsreport.Report
	Rows   []memberRow
	Self   string
	Leader string
	Err    *unavailable
}

// memberRow is one member with its health in a word or a sentence.
type memberRow struct {
	View   opsreport.MemberView
	Self   bool
	OK     bool
	Health string
}

// memberHealth judges one member as opsreport does the cluster.
func memberHealth(v opsreport.MemberView, leader string) (bool, string) {
	switch {
	case v.Err != nil:
		return false, "unreachable: " + opsreport.ErrText(v.Err)
	case v.Status.State == "Leader" && !v.Status.Ready:
		return false, "leader, not ready yet (recovering)"
	case leader != "" && v.Status.LeaderId != leader:
		return false, fmt.Sprintf("sees leader %q", v.Status.LeaderId)
	case v.Status.LeaderId == "":
		return false, "knows no leader"
	}
	return true, "ok"
}

func (s *Server) loadCluster(ctx context.Context, _ url.Values) (any, error) {
	st, err := s.cfg.Backend.ClusterStatus(ctx, &pb.ClusterStatusRequest{})
	if err != nil {
		return clusterData{Err: asUnavailable(err)}, nil
	}
	bearer := ""
	if id := identityFrom(ctx); id.session != nil {
		bearer = id.session.bearer
	}
	ask := func(ctx context.Context, addr string) (*pb.ClusterStatusResponse, error) {
		if s.cfg.AskMember == nil {
			return nil, fmt.Errorf("asking other members is not configured")
		}
		return s.cfg.AskMember(ctx, addr, bearer)
	}
	rep := opsreport.Gather(ctx, st, ask)
	d := clusterData{Report: rep, Self: st.NodeId, Leader: st.LeaderId}
	for _, v := range rep.Members {
		ok, h := memberHealth(v, st.LeaderId)
		d.Rows = append(d.Rows, memberRow{View: v, Self: v.Member.Id == st.NodeId, OK: ok, Health: h})
	}
	return d, nil
}

func clusterJSON(d any) any {
	c := d.(clusterData)
	if c.Err != nil {
		return map[string]any{"error": c.Err.Message}
	}
	type member struct {
		Member json.RawMessage `json:"member"`
		Status json.RawMessage `json:"status"`
		Error  string          `json:"error,omitempty"`
	}
	ms := []member{}
	for _, m := range c.Report.Members {
		x := member{Member: pbJSON(m.Member), Status: json.RawMessage("null")}
		if m.Status != nil {
			x.Status = pbJSON(m.Status)
		}
		if m.Err != nil {
			x.Error = opsreport.ErrText(m.Err)
		}
		ms = append(ms, x)
	}
	problems := c.Report.Problems
	if problems == nil {
		problems = []string{}
	}
	return map[string]any{"answered_by": pbJSON(c.Report.AnsweredBy), "members": ms, "healthy": c.Report.Healthy(), "problems": problems}
}

// ---- transactions

// txStates are the states the list filters on, as the coordinator names them.
func txStates() []string {
	out := make([]string, len(coordinator.AllStates))
	for i, st := range coordinator.AllStates {
		out[i] = st.String()
	}
	return out
}

// pageSize is the number of transactions on one page of the list.
const pageSize = 25

type txListData struct {
	State, MinAge, Participant, Label string
	FilterErr                         string // a filter that cannot be used: shown above the list
	States                            []string
	Rows                              []*pb.Transaction
	Page                              int
	First                             int // 1-based index of the first row
	Prev, Next                        string
	Truncated                         bool
	Err                               *unavailable
}

func (s *Server) loadTransactions(ctx context.Context, q url.Values) (any, error) {
	d := txListData{State: strings.ToUpper(strings.TrimSpace(q.Get("state"))), MinAge: strings.TrimSpace(q.Get("min_age")),
		Participant: strings.TrimSpace(q.Get("participant")), Label: strings.TrimSpace(q.Get("label")), States: txStates()}
	req := &pb.ListTransactionsRequest{State: d.State, Participant: d.Participant, Label: d.Label, Sort: "age"}
	if d.State != "" && !contains(d.States, d.State) {
		d.FilterErr = fmt.Sprintf("state %q: use one of %s", d.State, strings.Join(d.States, ", "))
		return d, nil
	}
	if d.MinAge != "" {
		a, err := time.ParseDuration(d.MinAge)
		if err != nil || a < 0 {
			d.FilterErr = fmt.Sprintf("age %q: give a duration such as 30s, 5m or 1h", d.MinAge)
			return d, nil
		}
		req.MinAge = durationpbNew(a)
	}
	if d.Label != "" && !strings.Contains(d.Label, "=") {
		d.FilterErr = fmt.Sprintf("label %q: want key=value", d.Label)
		return d, nil
	}
	page := 1
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n*pageSize > 10000 {
			d.FilterErr = fmt.Sprintf("page %q: use 1 to %d", p, 10000/pageSize)
			return d, nil
		}
		page = n
	}
	// Newest first reads best in a live list: ask for everything up to
	// this page (oldest first, as the service sorts) and reverse.
	req.Limit = uint32(min(10000, page*pageSize*4+1))
	resp, err := s.cfg.Backend.ListTransactions(ctx, req)
	if err != nil {
		d.Err = asUnavailable(err)
		return d, nil
	}
	all := resp.Transactions
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	from := (page - 1) * pageSize
	if from < len(all) {
		d.Rows = all[from:min(len(all), from+pageSize)]
	}
	d.Page, d.First, d.Truncated = page, from+1, resp.Truncated
	link := func(p int) string {
		v := url.Values{}
		for k, x := range map[string]string{"state": d.State, "min_age": d.MinAge, "participant": d.Participant, "label": d.Label} {
			if x != "" {
				v.Set(k, x)
			}
		}
		if p > 1 {
			v.Set("page", strconv.Itoa(p))
		}
		if len(v) == 0 {
			return "/transactions"
		}
		return "/transactions?" + v.Encode()
	}
	if page > 1 {
		d.Prev = link(page - 1)
	}
	if len(all) > from+pageSize {
		d.Next = link(page + 1)
	}
	return d, nil
}

func txListJSON(d any) any {
	x := d.(txListData)
	if x.Err != nil {
		return map[string]any{"error": x.Err.Message}
	}
	if x.FilterErr != "" {
		return map[string]any{"error": x.FilterErr}
	}
	rows := []json.RawMessage{}
	for _, t := range x.Rows {
		rows = append(rows, pbJSON(t))
	}
	return map[string]any{"transactions": rows, "page": x.Page, "has_next": x.Next != ""}
}

// ---- one transaction

type txData struct {
	Tx      *pb.Transaction
	Unknown bool
	Phases  []phase
	Gantt   template.HTML
	Err     *unavailable
}

// phase is one stretch of a transaction's life, from its timeline.
type phase struct {
	Name       string
	Start, Dur time.Duration // from BEGIN
	Class      string
}

// phasesOf cuts a timeline into its phases: active (BEGIN to the commit
// request), prepare and decision (to DECISION, or to ABORT), phase two (to
// the last branch committed or rolled back). Phases with no end in the
// timeline are left out.
func phasesOf(tl []*pb.TransactionEvent) []phase {
	if len(tl) == 0 {
		return nil
	}
	t0 := tl[0].At.AsTime()
	at := func(e *pb.TransactionEvent) time.Duration { return e.At.AsTime().Sub(t0) }
	var req, decided, last *pb.TransactionEvent
	aborted := false
	for _, e := range tl {
		switch e.Event {
		case "COMMIT_REQUESTED":
			req = e
		case "DECISION":
			decided = e
		case "ABORT":
			if decided == nil {
				decided, aborted = e, true
			}
		case "COMMITTED", "ROLLED_BACK":
			last = e
		}
	}
	var out []phase
	if req != nil {
		out = append(out, phase{Name: "active (statements)", Start: 0, Dur: at(req), Class: "p-active"})
		if decided != nil {
			name := "prepare and decision"
			if aborted {
				name = "prepare, aborted"
			}
			out = append(out, phase{Name: name, Start: at(req), Dur: at(decided) - at(req), Class: "p-prepare"})
		}
	} else if decided != nil {
		out = append(out, phase{Name: "active, aborted", Start: 0, Dur: at(decided), Class: "p-active"})
	}
	if decided != nil && last != nil && at(last) >= at(decided) {
		out = append(out, phase{Name: "phase two", Start: at(decided), Dur: at(last) - at(decided), Class: "p-two"})
	}
	return out
}

// drawPhases renders phases as an inline SVG bar (the table beside it
// carries the same figures in text).
func drawPhases(ps []phase) template.HTML {
	if len(ps) == 0 {
		return ""
	}
	end := ps[len(ps)-1].Start + ps[len(ps)-1].Dur
	if end <= 0 {
		end = time.Millisecond
	}
	const w, rowH = 800.0, 22.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="gantt" viewBox="0 0 %.0f %.0f" role="img" aria-label="phases of the transaction, %s in all">`, w, rowH*float64(len(ps))+4, durText(end))
	for i, p := range ps {
		x := w * float64(p.Start) / float64(end)
		bw := math.Max(2, w*float64(p.Dur)/float64(end))
		fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.0f" rx="3"/>`, p.Class, math.Min(x, w-bw), 2+rowH*float64(i), bw, rowH-6)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func (s *Server) loadTx(r *http.Request) (txData, int) {
	ctx, cancel := callCtx(r)
	defer cancel()
	t, err := s.cfg.Backend.GetTransaction(ctx, &pb.GetTransactionRequest{Txid: r.PathValue("txid")})
	if err != nil {
		code := http.StatusOK
		switch status.Code(err) {
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		}
		return txData{Err: asUnavailable(err)}, code
	}
	ps := phasesOf(t.Timeline)
	return txData{Tx: t, Unknown: t.Outcome == pb.Outcome_UNKNOWN || t.State == pb.TransactionState_IN_DOUBT,
		Phases: ps, Gantt: drawPhases(ps)}, http.StatusOK
}

func (s *Server) transactionPage(w http.ResponseWriter, r *http.Request) {
	d, code := s.loadTx(r)
	s.render(w, r, code, "transaction", view{Title: "Transaction " + r.PathValue("txid"), Nav: "transactions", Data: d})
}

func (s *Server) transactionAPI(w http.ResponseWriter, r *http.Request) {
	d, code := s.loadTx(r)
	if d.Err != nil {
		writeJSON(w, max(code, http.StatusBadRequest), map[string]string{"error": d.Err.Message})
		return
	}
	writeJSON(w, http.StatusOK, pbJSON(d.Tx))
}

// ---- in doubt

type inDoubtData struct {
	Resp        *pb.InDoubtResponse
	Shown       []*pb.InDoubtBranch // Resp.Branches, without those not ours unless asked
	AllShown    bool
	Plan        *pb.RecoverResponse
	Count       int
	Ours        int
	Foreign     int
	InFlight    int
	Unreachable []kv
	PlanUnreach []kv
	Err         *unavailable
}

type kv struct{ Key, Value string }

func sortedKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *Server) loadInDoubt(ctx context.Context, q url.Values) (any, error) {
	resp, err := s.cfg.Backend.InDoubt(ctx, &pb.InDoubtRequest{})
	if err != nil {
		return inDoubtData{Err: asUnavailable(err)}, nil
	}
	d := inDoubtData{Resp: resp, Count: opsreport.InDoubtCount(resp), Unreachable: sortedKV(resp.Unreachable), AllShown: q.Get("foreign") == "1"}
	for _, b := range resp.Branches {
		if b.Ours || d.AllShown {
			d.Shown = append(d.Shown, b)
		}
		switch {
		case !b.Ours:
			d.Foreign++
		case b.Action == pb.PlannedAction_IN_PROGRESS:
			d.InFlight++
		default:
			d.Ours++
		}
	}
	plan, err := s.cfg.Backend.Recover(ctx, &pb.RecoverRequest{DryRun: true})
	if err != nil {
		d.Err = asUnavailable(err)
		return d, nil
	}
	d.Plan, d.PlanUnreach = plan, sortedKV(plan.Unreachable)
	return d, nil
}

func inDoubtJSON(d any) any {
	x := d.(inDoubtData)
	out := map[string]any{"in_doubt": x.Count > 0, "count": x.Count}
	if x.Resp != nil {
		out["in_doubt_response"] = pbJSON(x.Resp)
	}
	if x.Plan != nil {
		out["plan"] = pbJSON(x.Plan)
	}
	if x.Err != nil {
		out["error"] = x.Err.Message
	}
	return out
}

// planFingerprint names a plan's actions, so that what is applied is what
// was reviewed.
func planFingerprint(p *pb.RecoverResponse) string {
	var lines []string
	for _, a := range p.Actions {
		lines = append(lines, a.Participant+"\x00"+a.Gid+"\x00"+a.Action.String())
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:16])
}

// actionable counts the actions a pass would carry out (not in flight).
func actionable(p *pb.RecoverResponse) int {
	n := 0
	for _, a := range p.Actions {
		if a.Action == pb.PlannedAction_WILL_COMMIT || a.Action == pb.PlannedAction_WILL_ROLL_BACK {
			n++
		}
	}
	return n
}

type applyData struct {
	Plan        *pb.RecoverResponse
	Unreachable []kv
	Fingerprint string
	Actionable  int
	Changed     bool // the plan changed since it was reviewed: nothing applied
	Missing     bool // the confirmation box was not ticked
	Result      *pb.RecoverResponse
	Done, Fail  int
	Err         *unavailable
}

func (s *Server) applyReview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := callCtx(r)
	defer cancel()
	plan, err := s.cfg.Backend.Recover(ctx, &pb.RecoverRequest{DryRun: true})
	if err != nil {
		s.render(w, r, http.StatusOK, "apply", view{Title: "Apply the recovery plan", Nav: "in-doubt", Data: applyData{Err: asUnavailable(err)}})
		return
	}
	s.render(w, r, http.StatusOK, "apply", view{Title: "Apply the recovery plan", Nav: "in-doubt", Data: applyData{Plan: plan,
		Unreachable: sortedKV(plan.Unreachable), Fingerprint: planFingerprint(plan), Actionable: actionable(plan)}})
}

// apply runs one recovery pass, as txctl recover does (and audited the
// same way, by the Admin service), once the reviewed plan is confirmed and
// still the plan.
func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	id := identityFrom(r.Context())
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) || !validCSRF(id, r.PostForm.Get("csrf")) {
		if s.cfg.OnDenied != nil {
			s.cfg.OnDenied(id.client, "console POST /in-doubt/apply", "missing or stale CSRF token")
		}
		s.renderError(w, r, http.StatusForbidden, "the form is stale or did not come from this console (CSRF token missing or wrong): nothing was applied; open the in-doubt page again")
		return
	}
	// One recovery pass calls every participant, each bounded by the
	// coordinator's call timeout; applyTimeout bounds the whole.
	ctx, cancel := context.WithTimeout(id.caller(r.Context()), applyTimeout)
	defer cancel()
	v := view{Title: "Apply the recovery plan", Nav: "in-doubt"}
	plan, err := s.cfg.Backend.Recover(ctx, &pb.RecoverRequest{DryRun: true})
	if err != nil {
		v.Data = applyData{Err: asUnavailable(err)}
		s.render(w, r, http.StatusOK, "apply", v)
		return
	}
	d := applyData{Plan: plan, Unreachable: sortedKV(plan.Unreachable), Fingerprint: planFingerprint(plan), Actionable: actionable(plan)}
	switch {
	case r.PostForm.Get("confirm") != "yes":
		d.Missing = true
		v.Data = d
		s.render(w, r, http.StatusUnprocessableEntity, "apply", v)
		return
	case r.PostForm.Get("plan") != d.Fingerprint:
		d.Changed = true
		v.Data = d
		s.render(w, r, http.StatusConflict, "apply", v)
		return
	}
	s.log.Warn("console: applying the recovery plan", "client", id.client, "actions", d.Actionable, "remote", r.RemoteAddr)
	res, err := s.cfg.Backend.Recover(ctx, &pb.RecoverRequest{DryRun: false})
	if err != nil {
		d.Err = asUnavailable(err)
	} else {
		d.Result = res
		for _, a := range res.Actions {
			switch {
			case a.Action == pb.PlannedAction_IN_PROGRESS:
			case a.Error != "":
				d.Fail++
			default:
				d.Done++
			}
		}
	}
	v.Data = d
	s.render(w, r, http.StatusOK, "apply", v)
}

// ---- audit

type auditData struct {
	Resp    *pb.ListAuditResponse
	Entries []*pb.AuditEntry
	Action  string
	TxID    string
	Err     *unavailable
}

// auditShown bounds the entries one audit page lists (newest first).
const auditShown = 500

func (s *Server) loadAudit(ctx context.Context, q url.Values) (any, error) {
	d := auditData{Action: strings.ToUpper(strings.TrimSpace(q.Get("action"))), TxID: strings.TrimSpace(q.Get("txid"))}
	resp, err := s.cfg.Backend.ListAudit(ctx, &pb.ListAuditRequest{})
	if err != nil {
		d.Err = asUnavailable(err)
		return d, nil
	}
	d.Resp = resp
	for i := len(resp.Entries) - 1; i >= 0 && len(d.Entries) < auditShown; i-- {
		e := resp.Entries[i]
		if (d.Action == "" || e.Action == d.Action) && (d.TxID == "" || e.Txid == d.TxID) {
			d.Entries = append(d.Entries, e)
		}
	}
	return d, nil
}

func auditJSON(d any) any {
	x := d.(auditData)
	if x.Err != nil {
		return map[string]any{"error": x.Err.Message}
	}
	es := []json.RawMessage{}
	for _, e := range x.Entries {
		es = append(es, pbJSON(e))
	}
	return map[string]any{"verified": x.Resp.Verified, "broken_at_seq": x.Resp.BrokenAtSeq, "problem": x.Resp.Problem, "entries": es}
}

// ---- charts

type chartsData struct {
	Charts  []chart
	Samples int
	Points  []sample
	Off     bool
}

func (s *Server) loadCharts(_ context.Context, _ url.Values) (any, error) {
	if s.cfg.Figures == nil {
		return chartsData{Off: true}, nil
	}
	ps := s.figures.samples()
	return chartsData{Charts: s.figures.charts(), Samples: len(ps), Points: ps}, nil
}

func chartsJSON(d any) any {
	type point struct {
		At        time.Time `json:"at"`
		Committed float64   `json:"committed_per_s"`
		Aborted   float64   `json:"aborted_per_s"`
		Unknown   float64   `json:"unknown_per_s"`
		P50       *float64  `json:"p50_ms"`
		P99       *float64  `json:"p99_ms"`
		InDoubt   float64   `json:"in_doubt_branches"`
		Active    float64   `json:"active_transactions"`
	}
	x := d.(chartsData)
	ps := []point{}
	for _, s := range x.Points {
		ps = append(ps, point{At: s.At, Committed: s.Committed, Aborted: s.Aborted, Unknown: s.Unknown,
			P50: ptr(s.P50), P99: ptr(s.P99), InDoubt: s.InDoubt, Active: s.Active})
	}
	return map[string]any{"interval_s": 1, "samples": ps}
}

// ---- text helpers for the templates

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
