package coordinator

import (
	"fmt"
	"time"
)

// Limits are the bounds a running coordinator can change without a restart
// (node config reload). Each is named as in the configuration file so that
// a rejection can say which limit it hit.
type Limits struct {
	// DefaultTimeout applies when Begin gives none; MaxTimeout caps any.
	// A transaction past its deadline is rolled back.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// MaxActive bounds transactions in memory on this node.
	MaxActive int
	// MaxStatements bounds statements per transaction (and per Run call).
	MaxStatements int
}

// Limits returns the configuration's limits.
func (c Config) Limits() Limits {
	return Limits{DefaultTimeout: c.DefaultTimeout, MaxTimeout: c.MaxTimeout, MaxActive: c.MaxActive, MaxStatements: c.MaxStatements}
}

// Validate names the field at fault.
func (l Limits) Validate() error {
	c := DefaultConfig()
	c.DefaultTimeout, c.MaxTimeout, c.MaxActive, c.MaxStatements = l.DefaultTimeout, l.MaxTimeout, l.MaxActive, l.MaxStatements
	return c.Validate()
}

// lim is the limits in force. Never nil after New.
func (c *Coordinator) lim() *Limits { return c.limits.Load() }

// SetLimits replaces the limits in force, after validating them. It affects
// what comes next: a lower max_active refuses new transactions until enough
// finish, a lower max_timeout leaves running transactions their deadline.
// Safe for concurrent use.
func (c *Coordinator) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	c.limits.Store(&l)
	return nil
}

// CurrentLimits returns the limits in force.
func (c *Coordinator) CurrentLimits() Limits { return *c.lim() }
