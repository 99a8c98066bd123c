package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
)

func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue reads one sample ("name{labels} value") from a scrape; 0 when absent.
func metricValue(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Metrics are scraped over HTTP and move with a workload: commits, aborts,
// phase latencies per participant, Raft state; /readyz says ready.
func TestMetricsMoveWithWorkload(t *testing.T) {
	maddr := freePort(t)
	n := newNode(t, nodeOpts{extraYAML: fmt.Sprintf("metrics_listen: %s\n", maddr)})
	n.start()
	p := pg(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()
	ctx := context.Background()
	base := "http://" + maddr

	if code, body := scrape(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, _ := scrape(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	_, before := scrape(t, base+"/metrics")
	const commits = 5
	for i := 0; i < commits; i++ {
		if _, err := writeBoth(ctx, t, c, uniq("metric"), "m"); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := c.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "pg", "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	_, after := scrape(t, base+"/metrics")

	checks := []struct {
		series string
		min    float64
	}{
		{`txcoord_transactions_total{outcome="committed"}`, commits},
		{`txcoord_transactions_total{outcome="aborted"}`, 1},
		{`txcoord_phase_seconds_count{participant="pg",phase="prepare"}`, commits},
		{`txcoord_phase_seconds_count{participant="surreal",phase="commit"}`, commits},
		{`txcoord_branches_total{outcome="committed",participant="surreal"}`, commits},
	}
	for _, ch := range checks {
		if d := metricValue(after, ch.series) - metricValue(before, ch.series); d < ch.min {
			t.Errorf("%s moved by %v, want at least %v", ch.series, d, ch.min)
		}
	}
	if v := metricValue(after, "txcoord_raft_state"); v != 2 {
		t.Errorf("txcoord_raft_state = %v, want 2 (leader)", v)
	}
	if v := metricValue(after, "txcoord_ready"); v != 1 {
		t.Errorf("txcoord_ready = %v", v)
	}
}
