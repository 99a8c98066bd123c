// Package txctl is the operator's CLI for a txcoord cluster: cluster
// membership, transactions, the in-doubt diff, recovery, heuristic
// resolution, the audit trail, snapshots of the decision store and offline
// inspection of a stopped node's data directory. cmd/txctl only calls Main.
//
// Every command prints a human table by default and JSON with --output json,
// and ends with one of the documented exit codes (ExitOK ... ExitDegraded),
// so scripts can act on the result without parsing text.
//
// The package has few exported names: Main, Env and the exit codes.
package txctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/client"
	"google.golang.org/grpc/codes"
)

// Exit codes. They are part of the CLI's contract (docs/runbook.md).
const (
	// ExitOK: the command did what was asked and nothing is in doubt.
	ExitOK = 0
	// ExitFailure: the cluster (or the store file) could not be reached or
	// read, or it answered with an error; nothing is known to be changed
	// unless the message says so.
	ExitFailure = 1
	// ExitUsage: bad command line (unknown command or flag, missing
	// argument, invalid value); nothing was sent.
	ExitUsage = 2
	// ExitInDoubt: the command worked, but something is still in doubt
	// (prepared branches, undone decisions, unreachable participants, an
	// unknown outcome) or a verification failed (audit hash chain).
	ExitInDoubt = 3
	// ExitRefused: the cluster refused because the request contradicts its
	// state: resolving against a logged decision without --force, or a
	// transaction still in flight on the leader.
	ExitRefused = 4
	// ExitDegraded: cluster status answered, but the cluster is not
	// healthy (no leader, a member unreachable or not ready).
	ExitDegraded = 5
)

// Env is what Main needs from the process. Tests pass their own.
type Env struct {
	Stdout, Stderr io.Writer
	// Getenv reads the environment (TXCOORD_ADDR...); nil means os.Getenv.
	Getenv func(string) string
	// Actor is who is recorded in the audit trail for resolve and restore;
	// empty means the OS user and host name ("user@host").
	Actor string
}

// exitError carries an exit code and the message to print.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// quiet is an exit code whose explanation was already printed (a verdict
// such as "3 branches in doubt"): Main prints nothing more.
type quiet int

func (q quiet) Error() string { return fmt.Sprintf("exit status %d", int(q)) }

// options are the global flags and what every command shares.
type options struct {
	env     Env
	addr    string
	timeout time.Duration
	output  string
	tlsCA   string
	tlsCert string
	tlsKey  string
	tlsName string
	token   string
	tokenF  string
	ran     bool // a command's RunE started (errors before it are usage errors)
}

// Main runs txctl with args (without the program name) and returns the
// process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Stdout == nil {
		env.Stdout = os.Stdout
	}
	if env.Stderr == nil {
		env.Stderr = os.Stderr
	}
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	o := &options{env: env}
	root := o.rootCommand()
	root.SetArgs(args)
	_, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code := o.exitCode(err)
	var q quiet
	if !errors.As(err, &q) {
		fmt.Fprintf(env.Stderr, "txctl: %s\n", o.describe(err))
		if code == ExitUsage && !o.ran {
			fmt.Fprintln(env.Stderr, "Run 'txctl --help' (or 'txctl COMMAND --help') for usage and examples.")
		}
	}
	return code
}

func (o *options) exitCode(err error) int {
	var q quiet
	var ee *exitError
	var ce *client.Error
	switch {
	case errors.As(err, &q):
		return int(q)
	case errors.As(err, &ee):
		return ee.code
	case !o.ran:
		return ExitUsage // cobra: unknown command or flag, wrong arguments
	case errors.As(err, &ce):
		switch {
		case ce.Code == codes.InvalidArgument:
			return ExitUsage
		case ce.Code == codes.FailedPrecondition:
			return ExitRefused
		case errors.Is(ce, client.ErrOutcomeUnknown):
			return ExitInDoubt
		}
	}
	return ExitFailure
}

// describe words an error for the operator, with a hint where one helps.
func (o *options) describe(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := fmt.Sprintf("%s (%s)", ce.Message, ce.Code)
		switch {
		case ce.Code == codes.Unavailable && ce.Reason == "":
			// No ErrorInfo: the transport failed, no txcoord node answered.
			msg += fmt.Sprintf("\n  cannot reach a txcoord node at %s: check --addr (or TXCOORD_ADDR) and that the nodes run", o.addr)
			if o.tlsCA == "" {
				msg += "\n  (a cluster with TLS needs --tls-ca, --tls-cert and --tls-key)"
			}
		case ce.Code == codes.Unavailable: // a node answered: not the leader, or not ready
			msg += "\n  the cluster has no ready leader right now (election or recovery in progress?): retry, or see 'txctl cluster status'"
		case ce.Code == codes.Unauthenticated:
			msg += "\n  the cluster requires authentication: give --tls-cert/--tls-key (with --tls-ca) or --token-file"
		case ce.Code == codes.PermissionDenied:
			msg += "\n  your identity may not call this: the cluster's auth.clients entry for it needs admin: true"
		case ce.Code == codes.DeadlineExceeded:
			msg += fmt.Sprintf("\n  no answer within --timeout %s: raise it, or see 'txctl cluster status'", o.timeout)
		}
		return msg
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("%v\n  no answer within --timeout %s: raise it, or see 'txctl cluster status'", err, o.timeout)
	}
	return err.Error()
}

func (o *options) rootCommand() *cobra.Command {
	root := group(&cobra.Command{
		Use:   "txctl",
		Short: "Operate a txcoord cluster: status, transactions, in-doubt branches, recovery, audit, snapshots",
		Long: `txctl operates a txcoord cluster over its Admin gRPC API (any node: calls that
need the leader follow its redirect), and reads a stopped node's decision store
offline (txctl inspect).

When a transaction is stuck: txctl in-doubt, then txctl recover --dry-run, then
txctl recover. docs/runbook.md walks through it.

Exit codes:
  0  ok, nothing in doubt
  1  failure talking to the cluster (or reading a store file)
  2  usage error (nothing was sent)
  3  something is still in doubt, or a verification failed
  4  refused: the request contradicts a logged decision (or the transaction is in flight)
  5  cluster status: the cluster is degraded (no leader, a member unreachable or not ready)`,
		Example: `  txctl cluster status
  txctl --addr 10.0.0.1:7400,10.0.0.2:7400 in-doubt
  txctl recover --dry-run
  txctl tx show 0190a1b2c3d4e5f60718 --output json`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if o.output != "table" && o.output != "json" {
				return exitf(ExitUsage, "--output %q: use table or json", o.output)
			}
			if o.timeout <= 0 {
				return exitf(ExitUsage, "--timeout %s: must be positive", o.timeout)
			}
			if (o.tlsCert == "") != (o.tlsKey == "") {
				return exitf(ExitUsage, "--tls-cert and --tls-key go together (client certificate for mutual TLS)")
			}
			if o.token != "" && o.tokenF != "" {
				return exitf(ExitUsage, "--token and --token-file exclude each other")
			}
			if o.token == "" && o.tokenF == "" {
				o.token = o.env.Getenv("TXCOORD_TOKEN")
			}
			if o.tokenF != "" {
				b, err := os.ReadFile(o.tokenF)
				if err != nil {
					return exitf(ExitUsage, "--token-file: %v", err)
				}
				o.token = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
				if o.token == "" {
					return exitf(ExitUsage, "--token-file %s: the first line is empty", o.tokenF)
				}
			}
			return nil
		},
	})
	root.SetOut(o.env.Stdout)
	root.SetErr(o.env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return exitf(ExitUsage, "%v", err) })

	addr := o.env.Getenv("TXCOORD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7400"
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.addr, "addr", addr, "txcoord node(s), host:port[,host:port...] (env TXCOORD_ADDR); leader redirects are followed")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on the whole command (waits and retries included)")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&o.tlsCA, "tls-ca", o.env.Getenv("TXCOORD_TLS_CA"), "PEM CA bundle to verify the nodes' certificates (enables TLS; env TXCOORD_TLS_CA)")
	pf.StringVar(&o.tlsCert, "tls-cert", o.env.Getenv("TXCOORD_TLS_CERT"), "PEM client certificate for mutual TLS (env TXCOORD_TLS_CERT)")
	pf.StringVar(&o.tlsKey, "tls-key", o.env.Getenv("TXCOORD_TLS_KEY"), "PEM client key for mutual TLS (env TXCOORD_TLS_KEY)")
	pf.StringVar(&o.tlsName, "tls-server-name", o.env.Getenv("TXCOORD_TLS_SERVER_NAME"), "expected server name in the nodes' certificates (default: the host dialled)")
	pf.StringVar(&o.token, "token", "", "bearer token for a cluster with auth (env TXCOORD_TOKEN; prefer --token-file: a flag shows in ps)")
	pf.StringVar(&o.tokenF, "token-file", o.env.Getenv("TXCOORD_TOKEN_FILE"), "file whose first line is the bearer token (env TXCOORD_TOKEN_FILE)")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletions("table", "json"))

	root.AddCommand(o.clusterCommand(), o.txCommand(), o.inDoubtCommand(), o.recoverCommand(), o.resolveCommand(), o.markDoneCommand(),
		o.auditCommand(), o.snapshotCommand(), o.inspectCommand(), o.reloadCommand(), o.driftCommand())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Example = "  source <(txctl completion bash)\n  txctl completion zsh > \"${fpath[1]}/_txctl\"\n  txctl completion fish > ~/.config/fish/completions/txctl.fish"
			for _, sh := range c.Commands() {
				sh.Example = fmt.Sprintf("  txctl completion %s > txctl-completion.%s", sh.Name(), sh.Name())
			}
		}
		if c.Name() == "help" {
			c.Example = "  txctl help recover"
		}
	}
	return root
}

// run wraps a command body: it marks that arguments were accepted (so later
// errors are not usage errors) and bounds the command by --timeout.
func (o *options) run(body func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		o.ran = true
		ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
		defer cancel()
		return body(ctx, cmd, args)
	}
}

// group is a command that only holds subcommands: alone it is a usage error.
func group(c *cobra.Command) *cobra.Command {
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return exitf(ExitUsage, "unknown command %q for %q", args[0], cmd.CommandPath())
		}
		cmd.SetOut(cmd.ErrOrStderr())
		_ = cmd.Help()
		return quiet(ExitUsage)
	}
	return c
}

// dial connects to the cluster. Connections are lazy: errors show up on the
// first call.
func (o *options) dial(ctx context.Context) (*client.Client, error) {
	opts := []client.Option{
		// Enough to follow a redirect and ride out an election; --timeout
		// bounds the total anyway.
		client.WithRetryPolicy(client.RetryPolicy{Attempts: 6, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}),
	}
	secure := o.tlsCA != "" || o.tlsCert != ""
	if secure {
		cfg, err := o.tlsConfig()
		if err != nil {
			return nil, exitf(ExitUsage, "%v", err)
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	if o.token != "" {
		// Without TLS a token is sent only to loopback addresses (a
		// development cluster); anywhere else it would travel in clear.
		if !secure && !allLoopback(o.addr) {
			return nil, exitf(ExitUsage, "--token over plaintext to %s: the token would travel unencrypted; give --tls-ca (and --tls-cert/--tls-key)", o.addr)
		}
		opts = append(opts, client.WithToken(o.token, !secure))
	}
	c, err := client.Dial(ctx, o.addr, opts...)
	if err != nil {
		return nil, exitf(ExitUsage, "--addr %q: %v", o.addr, err)
	}
	return c, nil
}

// allLoopback reports whether every address in a --addr list is loopback.
func allLoopback(addrs string) bool {
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return false
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

func (o *options) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.tlsName}
	if o.tlsCA != "" {
		pem, err := os.ReadFile(o.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", o.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// actor is who the audit trail records: Env.Actor, else "user@host".
func (o *options) actor() string {
	if o.env.Actor != "" {
		return o.env.Actor
	}
	return DefaultActor()
}

// DefaultActor is the OS user and host name, "user@host".
func DefaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return name + "@" + host
}

func fixedCompletions(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
