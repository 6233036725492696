package tktest

import (
	"sync"
	"time"
)

// Clock is a test's clock, safe for concurrent use: pass Now to what it
// tests (WithClock options), and move it with Advance.
type Clock struct {
	mu        sync.Mutex
	t         time.Time
	onAdvance []func(time.Duration)
}

// NewClock is a clock at t. Each onAdvance is called with every Advance,
// after the clock moved: Backend.FastForward, so miniredis's TTLs move
// with it.
func NewClock(t time.Time, onAdvance ...func(time.Duration)) *Clock {
	return &Clock{t: t, onAdvance: onAdvance}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	for _, f := range c.onAdvance {
		f(d)
	}
}
