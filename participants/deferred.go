package participants

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Deferred stands for a participant whose database could not be reached
// when the node started. It keeps opening it in the background, with
// exponential backoff between attempts, and until an attempt succeeds it
// answers every call with an error wrapping ErrUnavailable that names the
// last failure; afterwards it passes every call to the opened participant.
// A node therefore starts, joins its cluster and resolves what the other
// participants allow while one database is down, and the recovery scan
// finishes the rest once it is back.
//
// Capabilities of the opened participant (CommitRecorder...) are reachable
// through Unwrap once it is open; before that, Capability finds none.
// Safe for concurrent use.
type Deferred struct {
	name string
	kind Kind
	open func(ctx context.Context) (Participant, error)
	log  *slog.Logger

	mu       sync.Mutex
	p        Participant
	lastErr  error
	attempts int
	closed   bool

	// lifetime ends at Close: it cancels a wait or an attempt in progress.
	lifetime context.Context
	end      context.CancelFunc
	done     chan struct{}
}

// DeferredRetry bounds the background attempts: the first retry waits Min,
// each next one twice as long, at most Max; one attempt may take Attempt.
type DeferredRetry struct {
	Min, Max, Attempt time.Duration
}

// DefaultDeferredRetry retries after 1 s, then backs off to every 30 s: a
// database that comes back is noticed within half a minute, and one that
// stays down costs a connection attempt per 30 s.
func DefaultDeferredRetry() DeferredRetry {
	return DeferredRetry{Min: time.Second, Max: 30 * time.Second, Attempt: 30 * time.Second}
}

// NewDeferred returns a Deferred for the participant name of kind, whose
// first opening failed with firstErr, and starts the background attempts
// of open. open must be safe to call again after it failed.
func NewDeferred(name string, kind Kind, firstErr error, open func(ctx context.Context) (Participant, error),
	retry DeferredRetry, logger *slog.Logger) *Deferred {
	if retry.Min <= 0 || retry.Max < retry.Min || retry.Attempt <= 0 {
		panic(fmt.Sprintf("participants: DeferredRetry %+v: Min and Attempt must be positive and Max at least Min", retry))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Deferred{
		name: name, kind: kind, open: open, lastErr: firstErr, attempts: 1,
		log:  logger.With(slog.String("participant", name)),
		done: make(chan struct{}),
	}
	d.lifetime, d.end = context.WithCancel(context.Background())
	d.log.Warn("participant unreachable at start; the node starts without it and keeps trying",
		slog.String("err", firstErr.Error()), slog.Duration("first_retry", retry.Min))
	go d.reopen(retry)
	return d
}

func (d *Deferred) reopen(retry DeferredRetry) {
	defer close(d.done)
	wait := retry.Min
	for {
		select {
		case <-d.lifetime.Done():
			return
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(d.lifetime, retry.Attempt)
		p, err := d.open(ctx)
		cancel()
		d.mu.Lock()
		d.attempts++
		if err == nil && d.closed {
			d.mu.Unlock()
			p.Close()
			return
		}
		if err == nil {
			d.p, d.lastErr = p, nil
			attempts := d.attempts
			d.mu.Unlock()
			d.log.Info("participant open after earlier failures", slog.Int("attempts", attempts))
			return
		}
		d.lastErr = err
		d.mu.Unlock()
		wait = min(wait*2, retry.Max)
		d.log.Warn("participant still unreachable", slog.String("err", err.Error()), slog.Duration("next_retry", wait))
	}
}

// current returns the opened participant, or an error wrapping
// ErrUnavailable that says why there is none yet.
func (d *Deferred) current() (Participant, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p != nil {
		return d.p, nil
	}
	if d.closed {
		return nil, fmt.Errorf("participant %s: closed: %w", d.name, ErrUnavailable)
	}
	return nil, fmt.Errorf("participant %s: not open yet (%d attempts; the node keeps trying): %w: %v",
		d.name, d.attempts, ErrUnavailable, d.lastErr)
}

// Name is the configured name.
func (d *Deferred) Name() string { return d.name }

// Kind is the configured kind.
func (d *Deferred) Kind() Kind { return d.kind }

// Unwrap returns the opened participant, or nil before it is open.
func (d *Deferred) Unwrap() Participant {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.p
}

// Begin opens a branch on the participant once it is open.
func (d *Deferred) Begin(ctx context.Context, gid string, opts BranchOptions) (Branch, error) {
	p, err := d.current()
	if err != nil {
		return nil, err
	}
	return p.Begin(ctx, gid, opts)
}

// CommitPrepared commits on the participant once it is open.
func (d *Deferred) CommitPrepared(ctx context.Context, gid string) error {
	p, err := d.current()
	if err != nil {
		return err
	}
	return p.CommitPrepared(ctx, gid)
}

// CommitPreparedReceipt commits with the branch's receipt on the
// participant once it is open.
func (d *Deferred) CommitPreparedReceipt(ctx context.Context, gid, receipt string) error {
	p, err := d.current()
	if err != nil {
		return err
	}
	return CommitPreparedReceipt(ctx, p, gid, receipt)
}

// RollbackPrepared rolls back on the participant once it is open.
func (d *Deferred) RollbackPrepared(ctx context.Context, gid string) error {
	p, err := d.current()
	if err != nil {
		return err
	}
	return p.RollbackPrepared(ctx, gid)
}

// InDoubt lists the participant's prepared branches once it is open.
func (d *Deferred) InDoubt(ctx context.Context, prefix string) ([]InDoubtBranch, error) {
	p, err := d.current()
	if err != nil {
		return nil, err
	}
	return p.InDoubt(ctx, prefix)
}

// Close stops the background attempts and closes the participant if it
// was opened.
func (d *Deferred) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	p := d.p
	d.mu.Unlock()
	d.end()
	<-d.done
	if p != nil {
		return p.Close()
	}
	return nil
}
