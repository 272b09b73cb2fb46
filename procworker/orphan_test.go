//go:build unix

package procworker

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNoOrphansWhenTheHostDies starts a host process (this test binary)
// that starts a worker, kills the host with SIGKILL (no Go code runs), and
// checks that the worker process goes too.
func TestNoOrphansWhenTheHostDies(t *testing.T) {
	for _, kind := range []string{"python", "stubborn"} {
		t.Run(kind, func(t *testing.T) {
			if kind == "python" {
				needPython(t)
			}
			host := exec.Command(os.Args[0], "-test.run=^$")
			host.Env = append(os.Environ(), roleEnv+"=host", "HOST_WORKER="+kind, "GORACE=atexit_sleep_ms=0")
			out, err := host.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, host.Start())
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				_ = host.Process.Kill()
				_ = host.Wait()
				t.Fatalf("host did not report its worker: %v", err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(line))
			require.NoError(t, err)
			require.True(t, alive(pid), "the worker runs while its host does")
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // should the test fail

			require.NoError(t, host.Process.Signal(syscall.SIGKILL))
			_ = host.Wait()
			require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 5*time.Millisecond,
				"worker %d outlived its host", pid)
		})
	}
}
