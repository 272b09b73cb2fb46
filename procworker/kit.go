package procworker

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed python/affinity_worker.py
var pythonKit []byte

// PythonKit returns the source of affinity_worker.py, the Python helper,
// so a program can ship it wherever its worker scripts run.
func PythonKit() []byte { return append([]byte(nil), pythonKit...) }

// WritePythonKit writes affinity_worker.py into dir and returns its path.
// Put dir on the worker's PYTHONPATH (or next to its script).
func WritePythonKit(dir string) (string, error) {
	path := filepath.Join(dir, "affinity_worker.py")
	return path, os.WriteFile(path, pythonKit, 0o644)
}

// As decodes a call's result: the JSON a worker process returned, into T.
// It passes a call's error through, so it wraps a call directly:
//
//	n, err := procworker.As[int](s.Call(ctx, req))
func As[T any](v any, err error) (T, error) {
	var out T
	if err != nil {
		return out, err
	}
	switch raw := v.(type) {
	case json.RawMessage:
		err = json.Unmarshal(raw, &out)
	case []byte:
		err = json.Unmarshal(raw, &out)
	default:
		if t, ok := v.(T); ok {
			return t, nil
		}
		return out, fmt.Errorf("procworker: result is a %T, not JSON", v)
	}
	if err != nil {
		return out, fmt.Errorf("procworker: decoding the result: %w", err)
	}
	return out, nil
}
