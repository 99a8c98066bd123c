// Command txcoord runs a transaction coordinator node.
//
//	txcoord serve --config txcoord.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/txcoord/txcoord/node"
)

const usage = `txcoord — atomic transactions across PostgreSQL and SurrealDB.

Usage:
  txcoord serve [flags]     run a coordinator node

Examples:
  txcoord serve --config examples/txcoord.yaml         (insecure: true, loopback)
  txcoord serve --config node.yaml                     (tls: cert_file/key_file/ca_file)
  TXCOORD_LISTEN=127.0.0.1:7401 txcoord serve --config node2.yaml

Flags of serve:
`

type failpoints map[string]string

func (f failpoints) String() string { return fmt.Sprint(map[string]string(f)) }
func (f failpoints) Set(v string) error {
	name, action, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want name=action, e.g. after-decision=kill")
	}
	f[name] = action
	return nil
}

func main() {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration file (see examples/txcoord.yaml)")
	listen := fs.String("listen", "", "gRPC listen address (overrides config and TXCOORD_LISTEN)")
	dataDir := fs.String("data-dir", "", "data directory for the decision store (overrides config)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	insecure := fs.Bool("insecure", false, "run without TLS (loopback listeners only; development)")
	fps := failpoints{}
	fs.Var(fps, "failpoint", "TESTS ONLY: name=kill (or kill@P, probability P) SIGKILLs the process at a 2PC failpoint (before-decision, after-decision, mid-commit, before-forget, unstored-decision); repeatable")

	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fs.Usage()
		if len(os.Args) >= 2 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
			os.Exit(0)
		}
		os.Exit(2)
	}
	fs.Parse(os.Args[2:])

	// read is how the configuration is read at start and again on reload
	// (SIGHUP, txctl reload): file, then environment, then flags.
	read := func() (node.Config, error) {
		cfg, err := node.Load(*configPath)
		if err != nil {
			return cfg, err
		}
		cfg.ApplyEnv(os.Getenv)
		if *listen != "" {
			cfg.Listen = *listen
		}
		if *dataDir != "" {
			cfg.DataDir = *dataDir
		}
		if *logLevel != "" {
			cfg.LogLevel = *logLevel
		}
		cfg.Failpoints = fps
		if *insecure {
			cfg.Insecure = true
		}
		return cfg, nil
	}
	cfg, err := read()
	if err != nil {
		fmt.Fprintln(os.Stderr, "txcoord:", err)
		os.Exit(2)
	}
	var level slog.LevelVar
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "txcoord: log_level %q: use debug, info, warn or error\n", cfg.LogLevel)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &level}))
	cfg.Level = &level
	if *configPath != "" {
		cfg.Reread = read
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := node.Run(ctx, cfg, logger); err != nil {
		fmt.Fprintln(os.Stderr, "txcoord:", err)
		os.Exit(1)
	}
}
