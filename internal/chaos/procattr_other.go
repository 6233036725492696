//go:build !linux

package chaos

import "syscall"

// childProcAttr puts a child in a process group of its own (a fault
// signals the whole group). Without Linux's Pdeathsig a child can outlive
// a crashed run; killAll still ends every child of a run that returns.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
