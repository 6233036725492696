//go:build linux

package chaos

import "syscall"

// childProcAttr puts a child in a process group of its own (a fault
// signals the whole group) and has the kernel kill it if this process dies,
// so nothing outlives a crashed run.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
