// Package testlog collects what concurrent goroutines or child processes
// write (log lines, stdout, stderr) so a test can read it while they run.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that is safe to write and read at the same time.
// The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
