package router

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// AdminHandler serves the admin API. Mount it on a separate, private
// listener: it changes the backend list and has no authentication.
//
//	GET    /healthz          200 if some backend is healthy, else 503
//	GET    /metrics          Prometheus text metrics
//	GET    /backends         the backends as JSON
//	POST   /backends         add {"name": "...", "url": "..."}
//	DELETE /backends/{name}  remove a backend
func (r *Router) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		for _, b := range r.Backends() {
			if b.Healthy {
				_, _ = w.Write([]byte("ok\n"))
				return
			}
		}
		http.Error(w, "no healthy backend", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = r.WriteMetrics(w)
	})
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Backends())
	})
	mux.HandleFunc("POST /backends", func(w http.ResponseWriter, req *http.Request) {
		var b Backend
		dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := r.AddBackend(req.Context(), b); err != nil {
			adminError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, b)
	})
	mux.HandleFunc("DELETE /backends/{name...}", func(w http.ResponseWriter, req *http.Request) {
		if err := r.RemoveBackend(req.Context(), req.PathValue("name")); err != nil {
			adminError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return http.TimeoutHandler(mux, 30*time.Second, "admin request timed out\n")
}

func adminError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalidConfig):
		code = http.StatusBadRequest
	case errors.Is(err, ErrBackendExists), errors.Is(err, ErrLastBackend):
		code = http.StatusConflict
	case errors.Is(err, ErrUnknownBackend):
		code = http.StatusNotFound
	case errors.Is(err, ErrClosed):
		code = http.StatusServiceUnavailable
	}
	http.Error(w, err.Error(), code)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
