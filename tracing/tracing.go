// Package tracing exports OpenTelemetry spans for txcoord: one per gRPC call
// (through otelgrpc) and one per participant call, as a participant layer,
// with the GID and participant as attributes. Off unless an OTLP endpoint is
// configured; nothing global is set (the provider is passed explicitly).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/txcoord/txcoord/participants"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Config is the tracing section of a node's configuration.
type Config struct {
	// OTLPEndpoint is host:port of an OTLP/gRPC collector; empty: off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Insecure sends spans without TLS (a collector on loopback).
	Insecure bool `yaml:"insecure"`
	// SampleRatio of transactions traced, in (0,1]; default 1.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Enabled reports whether spans are exported.
func (c Config) Enabled() bool { return c.OTLPEndpoint != "" }

// Validate checks the section.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("tracing.sample_ratio %g: use a value in (0, 1]", c.SampleRatio)
	}
	return nil
}

// Tracer exports spans until Shutdown.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// New starts an exporter to the configured collector. Export is batched and
// bounded (the SDK drops spans rather than block transactions when the
// collector is slow or down).
func New(ctx context.Context, c Config, nodeID string) (*Tracer, error) {
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.OTLPEndpoint), otlptracegrpc.WithTimeout(5 * time.Second)}
	if c.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter for %s: %w", c.OTLPEndpoint, err)
	}
	ratio := c.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	res := resource.NewSchemaless(semconv.ServiceName("txcoord"), attribute.String("txcoord.node_id", nodeID))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(4096), sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(res),
	)
	return &Tracer{tp: tp, tracer: tp.Tracer("github.com/txcoord/txcoord")}, nil
}

// Shutdown flushes pending spans (bounded by ctx).
func (t *Tracer) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// ServerOption instruments a gRPC server: a span per call, continuing the
// caller's trace (W3C trace context).
func (t *Tracer) ServerOption() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(propagation.TraceContext{})))
}

// Trace wraps a participant so every call is a span (a child of the gRPC
// call's span when the call carries its context).
func (t *Tracer) Trace(p participants.Participant) participants.Participant {
	return &traced{Participant: p, t: t}
}

type traced struct {
	participants.Participant
	t *Tracer
}

func (o *traced) Unwrap() participants.Participant { return o.Participant }

func (t *Tracer) span(ctx context.Context, phase, participant, gid string) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, "participant."+phase, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("txcoord.participant", participant), attribute.String("txcoord.gid", gid)))
}

func end(s trace.Span, err error) {
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
		if errors.Is(err, participants.ErrAmbiguous) {
			s.SetAttributes(attribute.Bool("txcoord.ambiguous", true))
		}
	}
	s.End()
}

func (o *traced) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	ctx, s := o.t.span(ctx, "begin", o.Name(), gid)
	b, err := o.Participant.Begin(ctx, gid, opts)
	end(s, err)
	if err != nil {
		return nil, err
	}
	tb := &tracedBranch{Branch: b, t: o.t, name: o.Name()}
	if q, ok := b.(participants.Queuer); ok {
		return &tracedQueueBranch{tracedBranch: tb, q: q}, nil
	}
	return tb, nil
}

func (o *traced) CommitPrepared(ctx context.Context, gid string) error {
	return o.CommitPreparedReceipt(ctx, gid, "")
}

// CommitPreparedReceipt forwards participants.ReceiptCommitter, traced as
// a commit.
func (o *traced) CommitPreparedReceipt(ctx context.Context, gid, receipt string) error {
	ctx, s := o.t.span(ctx, "commit", o.Name(), gid)
	err := participants.CommitPreparedReceipt(ctx, o.Participant, gid, receipt)
	end(s, err)
	return err
}

func (o *traced) RollbackPrepared(ctx context.Context, gid string) error {
	ctx, s := o.t.span(ctx, "rollback", o.Name(), gid)
	err := o.Participant.RollbackPrepared(ctx, gid)
	end(s, err)
	return err
}

type tracedBranch struct {
	participants.Branch
	t    *Tracer
	name string
}

func (b *tracedBranch) Execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	ctx, s := b.t.span(ctx, "execute", b.name, b.GID())
	s.SetAttributes(attribute.String("txcoord.op", op.Kind.String()))
	r, err := b.Branch.Execute(ctx, op)
	end(s, err)
	return r, err
}

func (b *tracedBranch) Prepare(ctx context.Context) (participants.Vote, error) {
	ctx, s := b.t.span(ctx, "prepare", b.name, b.GID())
	v, err := b.Branch.Prepare(ctx)
	s.SetAttributes(attribute.String("txcoord.vote", v.String()))
	end(s, err)
	return v, err
}

// Receipt forwards participants.Receipter.
func (b *tracedBranch) Receipt() string { return participants.BranchReceipt(b.Branch) }

func (b *tracedBranch) CommitOnePhase(ctx context.Context) error {
	ctx, s := b.t.span(ctx, "commit_one_phase", b.name, b.GID())
	err := b.Branch.CommitOnePhase(ctx)
	end(s, err)
	return err
}

// tracedQueueBranch forwards participants.Queuer of a branch that has it;
// queued operations show in the span of the prepare or one-phase commit
// that sends them.
type tracedQueueBranch struct {
	*tracedBranch
	q participants.Queuer
}

func (b *tracedQueueBranch) Queue(op participants.Operation) error { return b.q.Queue(op) }

func (b *tracedQueueBranch) QueuedResults() []participants.Result { return b.q.QueuedResults() }
