package redistest

import (
	"errors"
	"fmt"
	"syscall"
)

// Freeze stops the server with SIGSTOP: it keeps its port, its connections
// and its data, and answers nothing. The kernel still accepts connections
// into the listen backlog and buffers what clients write, so a client sees
// neither a refused dial nor a reset: only reads that never return, as with
// a Redis stalled by a fork, a swap storm or a paused VM. Thaw resumes it;
// a frozen server is thawed at cleanup (Stop kills it either way).
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP, true) }

// Thaw resumes a frozen server with SIGCONT. Thawing a running server does
// nothing.
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, freeze bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("redistest: server is not running")
	}
	if freeze && !s.thawAtCleanup {
		s.thawAtCleanup = true
		s.tb.Cleanup(func() { _ = s.Thaw() })
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redistest: %v: %w", sig, err)
	}
	return nil
}
