package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/admin"
	"github.com/affinity-go/affinity/internal/browsertest"
)

// TestPageInABrowser loads the page in headless Chromium, makes a worker
// panic, and checks that the page, rendered by its own script, shows the
// taint, the restart and the new incarnation. The screenshot is kept with
// `go test -artifacts` (see testing.T.ArtifactDir).
func TestPageInABrowser(t *testing.T) {
	bin := browsertest.Chromium(t)
	rt := startRuntime(t)
	h, err := admin.New(admin.Config{Runtime: rt, Title: "browser test", Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, s := range []string{"a", "b", "c", "d"} {
		_, err := rt.Session(s).Call(context.Background(), "predict")
		require.NoError(t, err)
	}
	// The page renders the state it loads with it, so the DOM is complete
	// once it has loaded; the timeout stops the event stream that follows.
	dump := func() string { return string(browsertest.Browse(t, bin, srv.URL+"/", "--timeout=5000", "--dump-dom")) }

	before := dump()
	assert.Contains(t, before, `data-pool="models"`, "the pool is rendered")
	assert.Contains(t, before, `data-incarnation="1"`)
	assert.NotContains(t, before, `data-incarnation="2"`)
	assert.NotContains(t, before, "restarted: incarnation")

	id := crash(t, rt, "a")
	after := dump()
	assert.Contains(t, after, fmt.Sprintf(`data-worker="%d" data-incarnation="2"`, id), "the worker's new incarnation")
	assert.Contains(t, after, "restarted: incarnation 2")
	assert.Contains(t, after, "panic: model corrupted", "the taint's reason")

	shot := filepath.Join(t.ArtifactDir(), "admin-page.png")
	browsertest.Browse(t, bin, srv.URL+"/", "--timeout=5000", "--window-size=1280,900", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(png, []byte("\x89PNG")), "a PNG screenshot")
	t.Logf("screenshot: %s", shot)
}
