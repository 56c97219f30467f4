package dashboard_test

import (
	"bytes"
	"image/png"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway/dashboard"
)

const (
	goodKey = "sbk_goodgoodgoodgoodgoodgoodgoodgoodgoodgoodgoodgoodgood"
	badKey  = "sbk_badbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadb"
)

// fakeAPI stands in for the v1 API: it knows one key and records what reached it.
type fakeAPI struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Clone(r.Context()))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+goodKey {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"code":"unauthorized","message":"invalid API key"}}`)
		return
	}
	io.WriteString(w, `{"accounts":[]}`)
}

func (f *fakeAPI) last() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		return nil
	}
	return f.seen[len(f.seen)-1]
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	api   *fakeAPI
	clock *clock
	srv   *httptest.Server
	c     *http.Client
}

func newEnv(t *testing.T, tls bool) *env {
	t.Helper()
	e := &env{t: t, api: &fakeAPI{}, clock: &clock{t: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}}
	d := dashboard.New(dashboard.Config{API: e.api, IdleTimeout: 30 * time.Minute, MaxAge: 2 * time.Hour, Now: e.clock.Now})
	if tls {
		e.srv = httptest.NewTLSServer(d)
	} else {
		e.srv = httptest.NewServer(d)
	}
	t.Cleanup(e.srv.Close)
	e.c = e.srv.Client()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.c.Jar = jar
	e.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return e
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path string, body io.Reader, header map[string]string) answer {
	e.t.Helper()
	r, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	res, err := e.c.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, string(b)}
}

func (e *env) signIn(key string) answer {
	e.t.Helper()
	return e.do("POST", "/ui/signin", strings.NewReader(url.Values{"key": {key}}.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": e.srv.URL})
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// page loads / and returns it with its CSRF token ("" on the sign-in page).
func (e *env) page() (string, string) {
	e.t.Helper()
	a := e.do("GET", "/", nil, nil)
	if a.status != 200 {
		e.t.Fatalf("GET /: %d", a.status)
	}
	if m := csrfMeta.FindStringSubmatch(a.body); m != nil {
		return a.body, m[1]
	}
	return a.body, ""
}

func TestSignInWithBadKey(t *testing.T) {
	e := newEnv(t, false)
	for _, key := range []string{badKey, "", "not a key"} {
		a := e.signIn(key)
		if a.status != http.StatusUnauthorized && a.status != http.StatusBadRequest {
			t.Errorf("key %q: %d", key, a.status)
		}
		if a.header.Get("Set-Cookie") != "" {
			t.Errorf("key %q: a cookie was set", key)
		}
		if !strings.Contains(a.body, `id="signin-error"`) || strings.Contains(a.body, key+"\"") && key != "" {
			t.Errorf("key %q: page %s", key, a.body)
		}
	}
	if _, csrf := e.page(); csrf != "" {
		t.Error("signed in after bad keys")
	}
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 401 {
		t.Errorf("proxy without a session: %d", a.status)
	}
}

func TestSessionLifecycle(t *testing.T) {
	e := newEnv(t, false)
	a := e.signIn(goodKey)
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/" {
		t.Fatalf("sign-in: %d %s", a.status, a.body)
	}
	cookie := a.header.Get("Set-Cookie")
	for _, want := range []string{"sb_session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") || strings.Contains(cookie, goodKey) {
		t.Errorf("cookie over plain HTTP: %q", cookie)
	}
	body, csrf := e.page()
	if csrf == "" || strings.Contains(body, goodKey) || strings.Contains(body, goodKey[4:]) {
		t.Fatalf("app page: csrf %q, key shown: %v", csrf, strings.Contains(body, goodKey[4:]))
	}

	// The proxy adds the key; the browser's cookie and token do not reach the API.
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 200 {
		t.Fatalf("proxy: %d %s", a.status, a.body)
	}
	up := e.api.last()
	if up.URL.Path != "/v1/accounts" || up.Header.Get("Authorization") != "Bearer "+goodKey || up.Header.Get("Cookie") != "" {
		t.Errorf("upstream got %s auth=%q cookie=%q", up.URL.Path, up.Header.Get("Authorization"), up.Header.Get("Cookie"))
	}
	e.do("GET", "/ui/api/consent/whatsapp/%2B4915112345678", nil, nil)
	if up := e.api.last(); up.URL.EscapedPath() != "/v1/consent/whatsapp/%2B4915112345678" || up.URL.Path != "/v1/consent/whatsapp/+4915112345678" {
		t.Errorf("escaped path: %s (%s)", up.URL.EscapedPath(), up.URL.Path)
	}
	n := e.api.count()
	if a := e.do("GET", "/ui/api/erasures", nil, nil); a.status != 404 || e.api.count() != n {
		t.Errorf("a path outside the dashboard's part of the API: %d, reached the API: %v", a.status, e.api.count() != n)
	}

	// Idle sessions end; activity keeps one alive until its maximum age.
	e.clock.add(29 * time.Minute)
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 200 {
		t.Fatalf("within the idle timeout: %d", a.status)
	}
	e.clock.add(30 * time.Minute)
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 401 {
		t.Fatalf("after the idle timeout: %d", a.status)
	}
	if _, csrf := e.page(); csrf != "" {
		t.Fatal("the expired session still shows the app")
	}

	e.signIn(goodKey)
	for range 5 {
		e.clock.add(25 * time.Minute)
		e.do("GET", "/ui/api/accounts", nil, nil)
	}
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 401 {
		t.Fatalf("after the maximum age: %d", a.status)
	}

	// Sign-out needs the token and ends the session.
	e.signIn(goodKey)
	_, csrf = e.page()
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if a := e.do("POST", "/ui/signout", strings.NewReader("csrf=wrong"), form); a.status != 403 {
		t.Errorf("sign-out with a wrong token: %d", a.status)
	}
	if a := e.do("POST", "/ui/signout", strings.NewReader("csrf="+url.QueryEscape(csrf)), form); a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign-out: %d %q", a.status, a.header.Get("Set-Cookie"))
	}
	if a := e.do("GET", "/ui/api/accounts", nil, nil); a.status != 401 {
		t.Errorf("after sign-out: %d", a.status)
	}
}

func TestSecureCookie(t *testing.T) {
	e := newEnv(t, true)
	a := e.signIn(goodKey)
	if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("sign-in over TLS: %d %q", a.status, a.header.Get("Set-Cookie"))
	}
	// Behind a proxy that ends TLS.
	srv := httptest.NewServer(dashboard.New(dashboard.Config{API: e.api, SecureCookie: true}))
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.PostForm(srv.URL+"/ui/signin", url.Values{"key": {goodKey}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("sign-in behind a TLS proxy: %d %q", res.StatusCode, res.Header.Get("Set-Cookie"))
	}
}

func TestCSRFRefused(t *testing.T) {
	e := newEnv(t, false)
	e.signIn(goodKey)
	_, csrf := e.page()
	json := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name   string
		path   string
		header map[string]string
		status int
	}{
		{"no token", "/ui/api/messages", json, 403},
		{"wrong token", "/ui/api/messages", map[string]string{"X-CSRF-Token": csrf + "x"}, 403},
		{"token of another session", "/ui/api/messages", map[string]string{"X-CSRF-Token": "AAAA"}, 403},
		{"cross-site origin", "/ui/api/messages", map[string]string{"X-CSRF-Token": csrf, "Origin": "https://evil.example"}, 403},
		{"cross-site fetch", "/ui/api/messages", map[string]string{"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, 403},
		{"qr without token", "/ui/qr", nil, 403},
		{"with the token", "/ui/api/messages", map[string]string{"X-CSRF-Token": csrf}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := e.api.count()
			a := e.do("POST", tc.path, strings.NewReader(`{"channel":"whatsapp"}`), tc.header)
			if a.status != tc.status {
				t.Fatalf("%d %s", a.status, a.body)
			}
			if reached := e.api.count() != n; reached != (tc.status == 200) {
				t.Errorf("reached the API: %v", reached)
			}
		})
	}
	if a := e.signIn(goodKey); a.status != http.StatusSeeOther {
		t.Fatalf("same-origin sign-in: %d", a.status)
	}
	a := e.do("POST", "/ui/signin", strings.NewReader("key="+goodKey), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
	if a.status != 403 {
		t.Errorf("cross-site sign-in: %d", a.status)
	}
}

func TestSecurityHeadersAndNoInlineCode(t *testing.T) {
	e := newEnv(t, false)
	check := func(name string, a answer) {
		t.Helper()
		csp := a.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %s", name, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows inline code: %q", name, csp)
		}
		if a.header.Get("X-Content-Type-Options") != "nosniff" || a.header.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", name, a.header)
		}
	}
	signin := e.do("GET", "/", nil, nil)
	check("sign-in page", signin)
	check("bad sign-in", e.signIn(badKey))
	check("static", e.do("GET", "/ui/static/app.js", nil, nil))
	check("proxy", e.do("GET", "/ui/api/accounts", nil, nil))
	check("unknown", e.do("GET", "/ui/nothing", nil, nil))
	e.signIn(goodKey)
	app := e.do("GET", "/", nil, nil)
	check("app page", app)
	if app.header.Get("Cache-Control") != "no-store" {
		t.Errorf("app page cacheable: %q", app.header.Get("Cache-Control"))
	}
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=|javascript:`)
	for name, body := range map[string]string{"sign-in": signin.body, "app": app.body} {
		if m := inline.FindString(body); m != "" {
			t.Errorf("%s page has inline code: %q", name, m)
		}
	}
	if a := e.do("GET", "/ui/static/app.js", nil, nil); a.status != 200 || !strings.Contains(a.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %s", a.status, a.header.Get("Content-Type"))
	}
}

func TestQRImage(t *testing.T) {
	e := newEnv(t, false)
	if a := e.do("POST", "/ui/qr", strings.NewReader("2@abc"), nil); a.status != 401 {
		t.Errorf("without a session: %d", a.status)
	}
	e.signIn(goodKey)
	_, csrf := e.page()
	a := e.do("POST", "/ui/qr", strings.NewReader("2@abc,def,ghi"), map[string]string{"X-CSRF-Token": csrf})
	if a.status != 200 || a.header.Get("Content-Type") != "image/png" {
		t.Fatalf("%d %s", a.status, a.header.Get("Content-Type"))
	}
	img, err := png.Decode(bytes.NewReader([]byte(a.body)))
	if err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("not a QR image: %v", err)
	}
	if a := e.do("POST", "/ui/qr", strings.NewReader(strings.Repeat("x", 3000)), map[string]string{"X-CSRF-Token": csrf}); a.status != 400 {
		t.Errorf("oversized payload: %d", a.status)
	}
}
