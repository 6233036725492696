//go:build linux

package chaos

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping a socket to its process reads /proc, which only Linux has; on
// other systems fault_sockets_other.go says so, and the lock-holder fault
// reports it could not find the holder.

// socketInode finds, in /proc/net/tcp, the inode of the loopback TCP
// socket whose local port is localPort and remote port is remotePort: the
// client end of a connection the fake accepted.
func socketInode(localPort, remotePort int) (uint64, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, fmt.Errorf("find socket: %w (the lock-holder fault needs Linux /proc)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for lines := 0; sc.Scan() && lines < 1_000_000; lines++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[0] == "sl" {
			continue
		}
		if portOf(fields[1]) != localPort || portOf(fields[2]) != remotePort {
			continue
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil || inode == 0 {
			continue
		}
		return inode, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/net/tcp: %w", err)
	}
	return 0, fmt.Errorf("no socket 127.0.0.1:%d -> :%d in /proc/net/tcp", localPort, remotePort)
}

// portOf parses the port of a /proc/net/tcp address ("0100007F:1F90").
func portOf(addr string) int {
	_, hexPort, ok := strings.Cut(addr, ":")
	if !ok {
		return -1
	}
	p, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return -1
	}
	return int(p)
}

// ownerOf returns which of pids has the socket inode open.
func ownerOf(pids []int, inode uint64) (int, error) {
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // exited meanwhile
		}
		for _, e := range ents {
			if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && link == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("%w (inode %d)", errNoSuchChild, inode)
}

// portsTo lists the local ports of pid's TCP connections to remotePort on
// loopback: which of the fake's connections are that process's.
func portsTo(pid, remotePort int) (map[int]bool, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list sockets of pid %d: %w", pid, err)
	}
	inodes := map[uint64]bool{}
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(link, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil, fmt.Errorf("list sockets of pid %d: %w", pid, err)
	}
	defer f.Close()
	ports := map[int]bool{}
	sc := bufio.NewScanner(f)
	for lines := 0; sc.Scan() && lines < 1_000_000; lines++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[0] == "sl" || portOf(fields[2]) != remotePort {
			continue
		}
		if n, err := strconv.ParseUint(fields[9], 10, 64); err == nil && inodes[n] {
			ports[portOf(fields[1])] = true
		}
	}
	return ports, sc.Err()
}
