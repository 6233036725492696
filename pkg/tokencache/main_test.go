package tokencache

import (
	"os"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
)

// TestMain shares one redis-server and one Cluster among the cache
// scenarios that run on every backend.
func TestMain(m *testing.M) { os.Exit(tktest.Main(m)) }
