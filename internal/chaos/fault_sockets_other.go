//go:build !linux

package chaos

import (
	"errors"
	"fmt"
)

// errNoProc: the lock-holder fault maps a socket to its process through
// Linux's /proc, which this system lacks.
var errNoProc = errors.New("finding a socket's process needs Linux /proc")

func socketInode(localPort, remotePort int) (uint64, error) {
	return 0, fmt.Errorf("find socket 127.0.0.1:%d -> :%d: %w", localPort, remotePort, errNoProc)
}

func ownerOf(pids []int, inode uint64) (int, error) {
	return 0, fmt.Errorf("%w (inode %d): %w", errNoSuchChild, inode, errNoProc)
}

func portsTo(pid, remotePort int) (map[int]bool, error) {
	return nil, fmt.Errorf("list sockets of pid %d: %w", pid, errNoProc)
}
