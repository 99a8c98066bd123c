package e2e

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// collector is a minimal OTLP/gRPC trace receiver standing in for an
// OpenTelemetry collector (an external service, not a database).
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string][]map[string]string // name → attributes of each span
}

func (c *collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range sp.GetAttributes() {
					attrs[a.GetKey()] = a.GetValue().GetStringValue()
				}
				c.spans[sp.GetName()] = append(c.spans[sp.GetName()], attrs)
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (c *collector) has(name, key, value string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, attrs := range c.spans[name] {
		if key == "" || attrs[key] == value {
			return true
		}
	}
	return false
}

// With an OTLP endpoint configured, every gRPC call and every participant
// call of a transaction is exported as a span carrying the GID.
func TestTracingExportsSpans(t *testing.T) {
	needDBs(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{spans: map[string][]map[string]string{}}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, col)
	go gs.Serve(lis)
	defer gs.Stop()

	n := newNode(t, nodeOpts{extraYAML: fmt.Sprintf("tracing: {otlp_endpoint: %q, insecure: true}\n", lis.Addr().String())})
	n.start()
	p := pg(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()
	key := uniq("trace")
	txid, _, err := c.Run(context.Background(), client.TxOptions{},
		client.On("pg", client.SQL("INSERT INTO e2e_kv (k, v) VALUES ($1, 't')", key)),
		client.On("surreal", client.Upsert("e2e_kv", key, map[string]any{"v": "t"})))
	if err != nil {
		t.Fatal(err)
	}
	gid := "txc:" + n.clusterID + ":" + txid + ":pg"
	eventually(t, 15*time.Second, "spans exported", func() bool {
		return col.has("txcoord.v1.Coordinator/Run", "", "") &&
			col.has("participant.prepare", "txcoord.gid", gid) &&
			col.has("participant.commit", "txcoord.participant", "surreal")
	})
}
