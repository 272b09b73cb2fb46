// Package browsertest runs headless Chromium for tests of pages served on
// loopback.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
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

// flags are Chromium's flags for a run with profile as its profile: no
// network but loopback, since without the networking flags Chromium
// reaches out and stalls.
func flags(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir=" + profile}
}

// Browse runs Chromium headless on url with extra flags and returns its
// standard output. Each run gets a fresh profile.
func Browse(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append(flags(t.TempDir()), extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v: %s", err, stderr.String())
	}
	return out
}

// Browser is a Chromium that Start left running on a page.
type Browser struct {
	exited chan struct{}
	err    error        // how it ended, once exited is closed
	stderr bytes.Buffer // written until exited is closed
}

// Exited is closed once Chromium has ended, so that a test waiting on
// its page can give up at once.
func (b *Browser) Exited() <-chan struct{} { return b.exited }

// Err says how Chromium ended and what it wrote on its standard error.
// Call it once Exited is closed.
func (b *Browser) Err() error {
	return fmt.Errorf("chromium: %v: %s", b.err, b.stderr.Bytes())
}

// Start runs Chromium headless on url with extra flags and leaves it
// running (headless Chromium stays on its page), for tests that act while
// the page is open. The test's cleanup stops it and waits for it.
//
// Its profile is a directory of its own, not t.TempDir(): Chromium's
// helper processes may still write there after the browser has ended, and
// a failed removal of t.TempDir() fails the test. Start's removal is best
// effort.
func Start(t *testing.T, bin, url string, extra ...string) *Browser {
	t.Helper()
	profile, err := os.MkdirTemp("", "browsertest-")
	if err != nil {
		t.Fatalf("chromium profile: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append(append(flags(profile), extra...), url)...)
	// SIGTERM lets Chromium end its helper processes itself; a Kill
	// where signals are not supported (Windows), or 10 s later.
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = 10 * time.Second // also bounds the wait for helpers holding stderr open
	b := &Browser{exited: make(chan struct{})}
	cmd.Stderr = &b.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		_ = os.RemoveAll(profile)
		t.Fatalf("chromium: %v", err)
	}
	go func() {
		b.err = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-b.exited
		if t.Failed() {
			t.Log(b.Err())
		}
		// A helper still writing can make one pass fail; a few more
		// catch what it wrote meanwhile.
		for range 3 {
			if err = os.RemoveAll(profile); err == nil {
				return
			}
		}
		t.Logf("chromium profile %s not removed: %v", profile, err)
	})
	return b
}
