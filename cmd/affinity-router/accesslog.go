package main

import (
	"io"
	"os"
	"sync"
)

// accessLogFile is the -access-log file, reopened on SIGHUP so that a log
// rotator can move it away and the router goes on in a new one.
type accessLogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// openAccessLog opens path for appending; "-" is stdout, never reopened.
func openAccessLog(path string) (io.WriteCloser, error) {
	if path == "-" {
		return nopCloser{os.Stdout}, nil
	}
	a := &accessLogFile{path: path}
	if err := a.reopen(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *accessLogFile) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Write(p)
}

// reopen opens the path anew; on failure the old file stays in use.
func (a *accessLogFile) reopen() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.f
	a.f = f
	a.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (a *accessLogFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
