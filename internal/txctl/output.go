package txctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// JSON output: proto messages use their .proto field names (snake_case),
// enums as names, timestamps RFC 3339, durations like "1.5s"; every field is
// present even when empty, so scripts can rely on the keys.
var pj = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// raw turns a proto message into JSON that embeds in a Go struct.
func raw(m proto.Message) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	b, err := pj.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("txctl: proto message must encode: %v", err))
	}
	return b
}

func (o *options) json() bool { return o.output == "json" }

// printJSON writes v (a proto message or a JSON-encodable value) indented.
func (o *options) printJSON(v any) error {
	var b []byte
	if m, ok := v.(proto.Message); ok {
		b = raw(m)
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	var buf strings.Builder
	var anyv any
	if err := json.Unmarshal(b, &anyv); err != nil {
		return err
	}
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(anyv); err != nil {
		return err
	}
	_, err := io.WriteString(o.env.Stdout, buf.String())
	return err
}

// table is a tab-aligned table on stdout.
type table struct{ w *tabwriter.Writer }

func (o *options) table(header ...string) *table {
	t := &table{w: tabwriter.NewWriter(o.env.Stdout, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toAny(header)...)
	}
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		// Cells are single-line: a newline or tab would break the columns.
		parts[i] = strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
	}
	fmt.Fprintln(t.w, strings.Join(parts, "\t"))
}

func (t *table) flush() { t.w.Flush() }

func (o *options) printf(format string, args ...any) { fmt.Fprintf(o.env.Stdout, format, args...) }

// section prints a blank line and a heading (table output).
func (o *options) section(title string) { o.printf("\n%s\n", title) }

// ts formats a timestamp in UTC with milliseconds ("-" when unset).
func ts(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

func tsTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// age formats a duration for humans: 850ms, 12.3s, 4m05s, 3h20m, 2d4h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func since(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "-"
	}
	return age(time.Since(t.AsTime()))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// stateName drops the proto enums' disambiguating affixes.
func stateName(s pb.TransactionState) string {
	return strings.TrimSuffix(s.String(), "_STATE")
}

func branchStateName(s pb.BranchState) string {
	return strings.TrimPrefix(s.String(), "BRANCH_")
}

// flags lists a transaction's special markers.
func txFlags(t *pb.Transaction) string {
	var f []string
	if t.GetHeuristic() {
		f = append(f, "HEURISTIC")
	}
	if t.GetPresumed() {
		f = append(f, "presumed")
	}
	return strings.Join(f, ",")
}

// short shortens a long cell (hashes, errors) for tables; JSON has it whole.
func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
