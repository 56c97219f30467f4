// Package dashboard is the operator's web page at / : sign-in with an API key, the tenant's
// accounts with a live WhatsApp link (QR), a test send, a live table of messages and statuses,
// consent lookup and the webhook delivery log.
//
// It is server-rendered (html/template) with embedded static assets and vanilla JavaScript, and
// it never gives the API key to the browser: the key lives in a server-side session, the browser
// holds a random session id in an HttpOnly, SameSite=Strict cookie, and the page's script reaches
// the API through a same-origin proxy (/ui/api/…) that adds the session's key. Every request that
// changes something carries the session's CSRF token; every answer carries a strict CSP.
package dashboard

import (
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Prefix is where the dashboard's own routes live; the page itself is at /.
const Prefix = "/ui/"

// Defaults of Config.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
	DefaultMaxSessions = 10000
)

// cookieName is the session cookie. The value is a random id; the key stays on the server.
const cookieName = "sb_session"

// csrfHeader carries the CSRF token on the script's requests (from the page's meta tag).
const csrfHeader = "X-CSRF-Token"

// contentSecurityPolicy allows only the dashboard's own script, style and images (blob: for the
// QR image the script fetches), no inline code, no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// proxied reports whether the page may reach an API collection (the first segment after /v1/).
func proxied(collection string) bool {
	switch collection {
	case "accounts", "messages", "events", "consent", "webhooks":
		return true
	}
	return false
}

// Config configures the dashboard.
type Config struct {
	// API is the v1 API handler; the proxy and the sign-in check call it in-process.
	API http.Handler
	// IdleTimeout ends a session after this long without a request; MaxAge after sign-in.
	IdleTimeout time.Duration
	MaxAge      time.Duration
	MaxSessions int
	// SecureCookie marks the session cookie Secure even on plain HTTP: set it when TLS ends in a
	// proxy in front (the public URL is https). Over TLS the cookie is always Secure.
	SecureCookie bool
	Now          func() time.Time // default time.Now
	Log          zerolog.Logger
}

// Dashboard serves GET / and everything under Prefix. It implements http.Handler.
type Dashboard struct {
	cfg      Config
	sessions *sessions
	pages    *template.Template
	mux      *http.ServeMux
	log      zerolog.Logger
}

// New returns the dashboard. It panics without an API handler: a wiring mistake.
func New(cfg Config) *Dashboard {
	if cfg.API == nil {
		panic("dashboard.New: the API handler is required")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Dashboard{
		cfg:      cfg,
		sessions: newSessions(cfg.IdleTimeout, cfg.MaxAge, cfg.MaxSessions, cfg.Now),
		pages:    template.Must(template.ParseFS(templateFiles, "templates/*.html")),
		mux:      http.NewServeMux(),
		log:      cfg.Log,
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	d.mux.HandleFunc("GET /{$}", d.index)
	d.mux.HandleFunc("POST "+Prefix+"signin", d.signIn)
	d.mux.HandleFunc("POST "+Prefix+"signout", d.signOut)
	d.mux.HandleFunc("POST "+Prefix+"qr", d.qrImage)
	d.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	d.mux.HandleFunc(Prefix+"api/", d.proxy)
	d.mux.HandleFunc(Prefix, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	return d
}

// ServeHTTP sets the security headers every answer carries, refuses cross-site requests that
// change something, then routes.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make form posts send Origin: null
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	d.mux.ServeHTTP(w, r)
}

// sameOrigin reports whether a state-changing request comes from this site: browsers send Origin
// (and Sec-Fetch-Site) on such requests; a request with neither is not from a browser page.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

// current returns the request's live session.
func (d *Dashboard) current(r *http.Request) (string, session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", session{}, false
	}
	ss, ok := d.sessions.get(c.Value)
	return c.Value, ss, ok
}

type pageData struct {
	Error     string
	CSRF      string
	KeyPrefix string
}

func (d *Dashboard) render(w http.ResponseWriter, status int, name string, data pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := d.pages.ExecuteTemplate(w, name, data); err != nil {
		d.log.Warn().Err(err).Str("page", name).Msg("dashboard page failed")
	}
}

// index is the app for a signed-in browser, the sign-in form otherwise.
func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	_, ss, ok := d.current(r)
	if !ok {
		d.render(w, http.StatusOK, "signin.html", pageData{})
		return
	}
	d.render(w, http.StatusOK, "app.html", pageData{CSRF: ss.csrf, KeyPrefix: ss.keyPrefix})
}

// maxKeyLen bounds what the sign-in form may post.
const maxKeyLen = 256

// signIn checks the posted API key against the API itself and starts a session.
func (d *Dashboard) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	key := strings.TrimSpace(r.PostFormValue("key"))
	if key == "" || len(key) > maxKeyLen {
		d.render(w, http.StatusBadRequest, "signin.html", pageData{Error: "Enter an API key (sbk_…)."})
		return
	}
	switch status := d.apiStatus(r, key, "/v1/accounts"); status {
	case http.StatusOK:
	case http.StatusUnauthorized:
		d.log.Info().Str("event", "dashboard_signin_refused").Msg("dashboard sign-in with an invalid API key")
		d.render(w, http.StatusUnauthorized, "signin.html", pageData{Error: "This API key is not valid."})
		return
	default:
		d.log.Warn().Int("status", status).Msg("dashboard sign-in: the API could not check the key")
		d.render(w, http.StatusServiceUnavailable, "signin.html", pageData{Error: "The key could not be checked now; try again."})
		return
	}
	id, ok := d.sessions.create(key, keyPrefix(key))
	if !ok {
		d.render(w, http.StatusServiceUnavailable, "signin.html", pageData{Error: "Too many open sessions; try again later."})
		return
	}
	d.log.Info().Str("event", "dashboard_signin").Str("key_prefix", keyPrefix(key)).Msg("dashboard sign-in")
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: d.secure(r),
		SameSite: http.SameSiteStrictMode, MaxAge: int(d.cfg.MaxAge / time.Second),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (d *Dashboard) secure(r *http.Request) bool { return r.TLS != nil || d.cfg.SecureCookie }

// keyPrefix is what the page shows of the key: its first characters, never enough to use it.
func keyPrefix(key string) string {
	if n := len("sbk_") + 8; len(key) > n {
		return key[:n] + "…"
	}
	return "sbk_…"
}

// signOut ends the session (the form carries the CSRF token).
func (d *Dashboard) signOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	id, ss, ok := d.current(r)
	if ok && !ss.validCSRF(r.PostFormValue("csrf")) {
		http.Error(w, "invalid CSRF token: reload the page", http.StatusForbidden)
		return
	}
	if ok {
		d.sessions.delete(id)
		d.log.Info().Str("event", "dashboard_signout").Str("key_prefix", ss.keyPrefix).Msg("dashboard sign-out")
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, Secure: d.secure(r), SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// statusRecorder keeps only the status of an in-process API call.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

// apiStatus calls GET path on the API with key and returns the answer's status.
func (d *Dashboard) apiStatus(r *http.Request, key, path string) int {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, path, nil)
	if err != nil {
		return http.StatusInternalServerError
	}
	req.RemoteAddr = r.RemoteAddr
	req.Header.Set("Authorization", "Bearer "+key)
	rec := &statusRecorder{header: http.Header{}}
	d.cfg.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}

// proxy forwards /ui/api/<path> to the API's /v1/<path> with the session's key. A request that
// changes something needs the session's CSRF token in X-CSRF-Token.
func (d *Dashboard) proxy(w http.ResponseWriter, r *http.Request) {
	_, ss, ok := d.current(r)
	if !ok {
		writeProblem(w, http.StatusUnauthorized, "unauthorized", "sign in again: the session ended")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !ss.validCSRF(r.Header.Get(csrfHeader)) {
		writeProblem(w, http.StatusForbidden, "csrf_failed", "invalid or missing CSRF token: reload the page")
		return
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), Prefix+"api/")
	first, _, _ := strings.Cut(rest, "/")
	if !proxied(first) {
		writeProblem(w, http.StatusNotFound, "not_found", "the dashboard does not reach this part of the API")
		return
	}
	// Creating an endpoint or rotating its secret answers with the signing secret: never to a page.
	if first == "webhooks" && r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeProblem(w, http.StatusForbidden, "forbidden", "the dashboard only reads webhooks: change them with the API or `switchboard webhooks`")
		return
	}
	out := r.Clone(r.Context())
	out.URL.RawPath = "/v1/" + rest
	p, err := url.PathUnescape(out.URL.RawPath)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid_field", "malformed path")
		return
	}
	out.URL.Path = p
	out.RequestURI = ""
	out.Header.Del("Cookie")
	out.Header.Del(csrfHeader)
	out.Header.Set("Authorization", "Bearer "+ss.apiKey)
	d.cfg.API.ServeHTTP(w, out)
}

// writeProblem answers the proxy's own refusals in the API's error shape.
func writeProblem(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Error: problemDetail{Code: code, Message: message}})
}

type problem struct {
	Error problemDetail `json:"error"`
}

type problemDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
