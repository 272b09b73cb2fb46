package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// A browser cannot send the admin token with the live page's own requests
// (its script tag and its event stream), so with a token set the page
// first shows a login form, which trades the token for this cookie. The
// cookie admits the live page's reads alone: GET and HEAD under /ui/.
const uiCookieName = "affinity_admin_ui"

// uiCookieValue is the cookie's value for token: an HMAC of a fixed label
// under the token, so the router keeps no state for it and it stops working
// when the token changes.
func uiCookieValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("affinity-router live page"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// pageCookieOK reports whether req is a read of the live page carrying the
// cookie of auth's token.
func pageCookieOK(auth *adminAuth, req *http.Request) bool {
	if !strings.HasPrefix(req.URL.Path, "/ui/") || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		return false
	}
	c, err := req.Cookie(uiCookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(auth.uiCookie)) == 1
}

// serveLogin answers POST /ui/login, which the guard let through with the
// right bearer token: the live page's cookie. Without a token there is
// nothing to log in to.
func (r *Router) serveLogin() http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		auth := r.adminAuth.Load()
		if auth == nil {
			http.NotFound(w, req)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: uiCookieName, Value: auth.uiCookie, Path: "/ui/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: req.TLS != nil})
		w.WriteHeader(http.StatusNoContent)
	}
}

// writeLoginPage answers an unauthenticated GET /ui/ with the login form.
func writeLoginPage(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("WWW-Authenticate", `Bearer realm="affinity-router admin"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(loginPage))
}

// loginPage posts the token in the Authorization header, as every admin
// client does, and reloads on success. A link may carry the token in its
// fragment (#token=...), which never reaches a server: it is used once
// and dropped from the address bar and the history.
const loginPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>affinity-router: log in</title>
<style>body { font: 15px system-ui, sans-serif; margin: 3em auto; max-width: 32em; } input { width: 20em; }</style>
</head>
<body>
<h1>affinity-router</h1>
<p>The admin API needs its token. Enter it to see the live page; the browser then keeps a cookie
that opens this page only.</p>
<form id="login"><input id="token" type="password" autocomplete="current-password"
placeholder="admin token" required autofocus> <button>Log in</button></form>
<p id="error" role="alert"></p>
<script>
async function login(token) {
  const r = await fetch("login", {method: "POST", body: "{}",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"}});
  if (r.ok) { location.reload(); return; }
  document.getElementById("error").textContent = r.status === 401 ? "Wrong token." : "Login failed: " + r.status;
}
document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  login(document.getElementById("token").value);
});
const m = location.hash.match(/^#token=(.+)$/);
if (m) {
  history.replaceState(null, "", location.pathname);
  login(decodeURIComponent(m[1]));
}
</script>
</body>
</html>
`
