// Command txctl is the operator's CLI for txcoord. This first version shows
// transactions; cluster, in-doubt and recovery commands follow (see README).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/txcoord/txcoord/client"
	"google.golang.org/protobuf/encoding/protojson"
)

const usage = `txctl — operate a txcoord cluster.

Usage:
  txctl [--addr HOST:PORT] [--output table|json] tx show TXID
  txctl [--addr HOST:PORT] [--output table|json] tx wait TXID [--timeout 30s]

Examples:
  txctl tx show 0190a1b2c3d4e5f60718
  txctl --output json tx wait 0190a1b2c3d4e5f60718 --timeout 1m

Exit codes: 0 ok; 1 error talking to the cluster; 2 usage error;
3 (tx wait) the outcome is still unknown when the timeout ends.

Flags:
`

func main() {
	fs := flag.NewFlagSet("txctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	addr := fs.String("addr", envOr("TXCOORD_ADDR", "127.0.0.1:7400"), "address of any txcoord node (env TXCOORD_ADDR)")
	output := fs.String("output", "table", "table or json")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	args := fs.Args()
	if len(args) < 3 || args[0] != "tx" || (args[1] != "show" && args[1] != "wait") {
		fs.Usage()
		os.Exit(2)
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(os.Stderr, "txctl: --output %q: use table or json\n", *output)
		os.Exit(2)
	}
	txid := args[2]
	wfs := flag.NewFlagSet("wait", flag.ContinueOnError)
	timeout := wfs.Duration("timeout", 30*time.Second, "how long tx wait polls")
	if err := wfs.Parse(args[3:]); err != nil {
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout+5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "txctl:", err)
		os.Exit(1)
	}
	defer c.Close()
	if args[1] == "wait" {
		wctx, wcancel := context.WithTimeout(ctx, *timeout)
		_, err := c.WaitOutcome(wctx, txid)
		wcancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "txctl:", err)
			os.Exit(3)
		}
	}
	t, err := c.GetTransaction(ctx, txid)
	if err != nil {
		fmt.Fprintln(os.Stderr, "txctl:", err)
		os.Exit(1)
	}
	if *output == "json" {
		b, _ := protojson.Marshal(t)
		var pretty map[string]any
		json.Unmarshal(b, &pretty)
		out, _ := json.MarshalIndent(pretty, "", "  ")
		fmt.Println(string(out))
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "txid\t%s\n", t.Txid)
	fmt.Fprintf(w, "state\t%s\n", t.State)
	fmt.Fprintf(w, "outcome\t%s\n", t.Outcome)
	if t.Presumed {
		fmt.Fprintf(w, "presumed\tyes (no commit decision was logged)\n")
	}
	if t.CreatedAt != nil {
		fmt.Fprintf(w, "created\t%s\n", t.CreatedAt.AsTime().Format(time.RFC3339Nano))
	}
	if t.Error != "" {
		fmt.Fprintf(w, "error\t%s\n", t.Error)
	}
	for k, v := range t.Labels {
		fmt.Fprintf(w, "label\t%s=%s\n", k, v)
	}
	w.Flush()
	if len(t.Branches) > 0 {
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(w, "PARTICIPANT\tSTATE\tVOTE\tGID\tERROR")
		for _, b := range t.Branches {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Participant, b.State, b.Vote, b.Gid, b.Error)
		}
		w.Flush()
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
