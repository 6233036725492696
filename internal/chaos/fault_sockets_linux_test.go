//go:build linux

package chaos

import (
	"net"
	"net/http"
	"os"
	"testing"
)

// TestSocketOwnerIsThisProcess maps a loopback connection's client port to
// its owner through /proc, as the lock-holder fault does.
func TestSocketOwnerIsThisProcess(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	conn, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.TCPAddr).Port
	inode, err := socketInode(local, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Skipf("no /proc/net/tcp here: %v", err)
	}
	self := []int{1, os.Getpid()}
	pid, err := ownerOf(self, inode)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("ownerOf = %d, %v; want this process %d", pid, err, os.Getpid())
	}
	if _, err := socketInode(local, 1); err == nil {
		t.Fatal("socketInode matched a connection to the wrong remote port")
	}
}
