package router

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/browsertest"
)

// TestAdminLoginInABrowser opens the live page of a router with an admin
// token in headless Chromium, with the token in the link's fragment: the
// login form's script trades it for the cookie and reloads, and the page
// then renders the backends.
func TestAdminLoginInABrowser(t *testing.T) {
	bin := browsertest.Chromium(t)
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.Admin.Token = "s3cret-token-0123456789"
	p := startRouter(t, cfg)
	h := p.AdminHandler()
	var streamWithCookie atomic.Bool
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui/events" {
			// Chromium's virtual time stands still while a request is
			// open, so the page's endless event stream is answered 204
			// (which stops it) once it shows it carries the cookie.
			c, err := r.Cookie(uiCookieName)
			streamWithCookie.Store(err == nil && c.Value == uiCookieValue(cfg.Admin.Token))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer admin.Close()
	open := func(fragment string) string {
		return string(browsertest.Browse(t, bin, admin.URL+"/ui/"+fragment, "--virtual-time-budget=5000", "--dump-dom"))
	}

	dom := open("#token=" + cfg.Admin.Token)
	require.NotContains(t, dom, `<form id="login">`, "logged in: the live page replaced the form")
	require.Contains(t, dom, b.url(), "the live page rendered the backend")
	require.True(t, streamWithCookie.Load(), "the page's event stream carried the cookie")

	dom = open("#token=wrong-token-0123456789")
	require.Contains(t, dom, "Wrong token.")
}
