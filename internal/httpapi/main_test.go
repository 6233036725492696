package httpapi_test

import (
	"os"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
)

// TestMain shares one redis-server and one Cluster among the scenarios
// that run on every backend.
func TestMain(m *testing.M) { os.Exit(tktest.Main(m)) }
