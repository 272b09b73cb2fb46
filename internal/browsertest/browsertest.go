// Package browsertest runs headless Chromium for tests of pages served on
// loopback.
package browsertest

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"
)

// Chromium finds a headless-capable Chromium, or skips the test: .ci/run
// installs Debian's chromium, so CI runs the tests that need it.
func Chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (apt-get install chromium); this browser test is skipped")
	return ""
}

// Browse runs Chromium headless on url with extra flags and returns its
// standard output. Each run gets a fresh profile and no network but
// loopback: without the networking flags Chromium reaches out and stalls.
func Browse(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir()}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v: %s", err, stderr.String())
	}
	return out
}
