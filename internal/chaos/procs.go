package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is one process the run started. Each runs in its own process group
// (so a Ctrl-C on the terminal reaches only the chaos tool, which then
// kills the groups) and dies with its parent (Pdeathsig).
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, set before done is closed
	log  *os.File
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the child's whole process group.
func (c *child) signal(sig syscall.Signal) error {
	if c.exited() {
		return fmt.Errorf("%s (pid %d) has already exited", c.name, c.pid())
	}
	if err := syscall.Kill(-c.pid(), sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, c.name, c.pid(), err)
	}
	return nil
}

// wait waits up to d for the child to exit.
func (c *child) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-t.C:
		return false
	}
}

// kill SIGKILLs the group (after a SIGCONT, harmless if it was not
// stopped) and waits for the exit.
func (c *child) kill() {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	_ = syscall.Kill(-c.pid(), syscall.SIGCONT)
	c.wait(10 * time.Second)
}

// terminate asks the child to stop (SIGTERM), and kills it after grace.
func (c *child) terminate(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGCONT)
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	if !c.wait(grace) {
		c.kill()
	}
}

// procTable holds every child of a run, so one call kills them all.
type procTable struct {
	mu       sync.Mutex
	children []*child
}

// start runs bin with args; stdout goes to stdout (nil: the log file),
// stderr to the log file logPath.
func (t *procTable) start(name, bin string, args, env []string, logPath string, stdout io.Writer) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stderr = logFile
	cmd.Stdout = logFile
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() {
		c.err = cmd.Wait()
		_ = logFile.Close()
		close(c.done)
	}()
	t.mu.Lock()
	t.children = append(t.children, c)
	t.mu.Unlock()
	return c, nil
}

// killAll kills every child still running.
func (t *procTable) killAll() {
	t.mu.Lock()
	cs := append([]*child(nil), t.children...)
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); c.kill() }()
	}
	wg.Wait()
}

// pids lists the children still running, by pid.
func (t *procTable) running() map[int]*child {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[int]*child)
	for _, c := range t.children {
		if !c.exited() {
			m[c.pid()] = c
		}
	}
	return m
}

var errNoSuchChild = errors.New("no running child owns that socket")
