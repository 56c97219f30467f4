package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// defaults returns the built-in settings, before the file is decoded over them.
func defaults() *Config {
	return &Config{
		DataDir: "./data",
		Log:     LogConfig{Level: "info", Format: "json"},
		Server: ServerConfig{
			Listen:         ":8080",
			MaxBody:        MiB,
			RequestTimeout: 10 * time.Second,
			RateLimit:      RateLimitConfig{RequestsPerSecond: 200, Burst: 400},
		},
		Bus: BusConfig{
			DuplicateWindow: 2 * time.Minute,
			StatusMaxAge:    72 * time.Hour,
			InboundMaxAge:   72 * time.Hour,
			MaxDeliver:      10,
			AckWait:         30 * time.Second,
		},
		Store: StoreConfig{Driver: StoreSQLite, BatchSize: 256, BatchWait: 2 * time.Millisecond},
	}
}

func (c *ChannelConfig) setDefaults() { c.Consent.ReplyWindow = 24 * time.Hour }

func (s *SandboxConfig) setDefaults() {
	s.DeliveredAfter = 200 * time.Millisecond
	s.ReadAfter = 500 * time.Millisecond
	s.FailCode = gateway.EChannelError
}

func (w *WhatsMeowConfig) setDefaults() {
	w.RatePerMinute = 20
	w.Burst = 5
	w.Jitter = 2 * time.Second
	w.FirstContactPerHour = 10
	w.ReachoutLock = time.Hour
	w.MediaMaxSize = 16 * MiB
	w.DeviceName = "Switchboard"
}

func (g *GraphConfig) setDefaults() {
	g.Auth = AuthDelegated
	g.Cloud = "public"
	g.PollInterval = 30 * time.Second
}

// defaultKeywords are the built-in keyword lists of DESIGN §3.5.
func defaultKeywords() KeywordsConfig {
	return KeywordsConfig{
		OptOut: []string{"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"},
		OptIn:  []string{"START", "YES", "UNSTOP"},
		Help:   []string{"HELP", "INFO"},
	}
}

// cloudEndpoints returns the login and Graph hosts of a Microsoft cloud.
func cloudEndpoints(cloud string) (authority, graph string, ok bool) {
	switch cloud {
	case "public":
		return "https://login.microsoftonline.com", "https://graph.microsoft.com", true
	case "usgov":
		return "https://login.microsoftonline.us", "https://graph.microsoft.us", true
	case "china":
		return "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", true
	}
	return "", "", false
}

// Validate fills in what Load derives (embedded bus and its store dir, the SQLite path, channel
// consent defaults, keyword lists, the settings section of each account's driver, Graph
// endpoints) and checks c. It returns nil or a *gateway.Error wrapping Problems. Start a
// configuration built in code from Dev or Parse so that it has the built-in defaults. Validate
// writes to c (harmlessly, for a loaded config): do not call it while other goroutines read c.
func (c *Config) Validate() error {
	if c.loc == nil {
		c.loc = newLocations("")
	}
	r := newReport(c.loc)
	finish(c, r)
	return problemsError(r.sorted())
}

func problemsError(ps Problems) error {
	if len(ps) == 0 {
		return nil
	}
	noun := "problems"
	if len(ps) == 1 {
		noun = "problem"
	}
	return gateway.WrapError(gateway.EInvalidField, ps, "invalid configuration (%d %s)", len(ps), noun)
}

// finish derives what is derived and checks everything.
func finish(c *Config, r *report) {
	normalize(c, r)
	check(c, r)
}

type channelRef struct {
	ch   gateway.Channel
	cfg  *ChannelConfig
	path string
}

func channelsOf(t *TenantConfig, tenantPath string) []channelRef {
	var refs []channelRef
	if t.Channels.WhatsApp != nil {
		refs = append(refs, channelRef{gateway.WhatsApp, t.Channels.WhatsApp, tenantPath + ".channels.whatsapp"})
	}
	if t.Channels.Teams != nil {
		refs = append(refs, channelRef{gateway.Teams, t.Channels.Teams, tenantPath + ".channels.teams"})
	}
	return refs
}

// normalize applies the defaults that depend on other settings. It is idempotent.
func normalize(c *Config, r *report) {
	b := &c.Bus
	if len(b.URLs) > 0 && b.Embedded != nil && c.loc.overridden("bus.urls") && !c.loc.overriddenUnder("bus.embedded") {
		b.Embedded = nil // URLs from the environment or a flag replace the file's embedded server
	}
	if len(b.URLs) == 0 && b.Embedded == nil {
		b.Embedded = &EmbeddedBusConfig{}
	}
	if b.Embedded != nil && b.Embedded.StoreDir == "" && c.DataDir != "" {
		b.Embedded.StoreDir = filepath.Join(c.DataDir, "nats")
	}
	if c.Store.DSN == "" && c.Store.Driver == StoreSQLite && c.DataDir != "" {
		c.Store.DSN = filepath.Join(c.DataDir, "switchboard.db")
	}
	c.Server.PublicURL = strings.TrimRight(c.Server.PublicURL, "/")

	for ti := range c.Tenants {
		for _, ref := range channelsOf(&c.Tenants[ti], indexPath("tenants", ti)) {
			cc := ref.cfg
			if cc.Consent.RequireOptIn == nil {
				v := ref.ch == gateway.WhatsApp
				cc.Consent.RequireOptIn = &v
			}
			mergeKeywords(&cc.Consent.Keywords, r, ref.path+".consent.keywords")
			for ai := range cc.Accounts {
				normalizeAccount(&cc.Accounts[ai], ref.ch)
			}
		}
	}
}

func normalizeAccount(a *AccountConfig, ch gateway.Channel) {
	switch a.Driver {
	case DriverSandbox:
		if a.Sandbox == nil {
			a.Sandbox = &SandboxConfig{}
			a.Sandbox.setDefaults()
		}
		for i, to := range a.Sandbox.Fail {
			if addr, err := gateway.ParseAddress(ch, to); err == nil {
				a.Sandbox.Fail[i] = addr.String()
			}
		}
	case DriverWhatsMeow:
		if a.WhatsMeow == nil {
			a.WhatsMeow = &WhatsMeowConfig{}
			a.WhatsMeow.setDefaults()
		}
	case DriverGraph:
		if a.Graph == nil {
			a.Graph = &GraphConfig{}
			a.Graph.setDefaults()
		}
		g := a.Graph
		if auth, graph, ok := cloudEndpoints(g.Cloud); ok {
			if g.AuthorityURL == "" {
				g.AuthorityURL = auth
			}
			if g.GraphURL == "" {
				g.GraphURL = graph
			}
		}
		g.AuthorityURL = strings.TrimRight(g.AuthorityURL, "/")
		g.GraphURL = strings.TrimRight(g.GraphURL, "/")
	}
}

// mergeKeywords upper-cases the configured keywords, reports and drops those that are not one
// word, and puts them after the built-in ones.
func mergeKeywords(k *KeywordsConfig, r *report, path string) {
	def := defaultKeywords()
	merge := func(builtin, extra []string, p string) []string {
		out := append([]string(nil), builtin...)
		seen := map[string]bool{}
		for _, w := range builtin {
			seen[w] = true
		}
		for i, w := range extra {
			w = strings.ToUpper(strings.TrimSpace(w))
			if msg := keywordProblem(w); msg != "" {
				r.add(indexPath(p, i), "%s", msg)
				continue
			}
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
		return out
	}
	k.OptOut = merge(def.OptOut, k.OptOut, path+".opt_out")
	k.OptIn = merge(def.OptIn, k.OptIn, path+".opt_in")
	k.Help = merge(def.Help, k.Help, path+".help")
}

func keywordProblem(w string) string {
	if w == "" {
		return "empty keyword: remove it"
	}
	for _, r := range w {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			return fmt.Sprintf("%q is not a single word: a keyword is one word of letters or digits, matched as the whole message", w)
		}
	}
	return ""
}

// check reports everything wrong with c, which normalize has seen.
func check(c *Config, r *report) {
	if strings.TrimSpace(c.DataDir) == "" {
		r.add("data_dir", "must not be empty: name the directory for the database and the bus store, e.g. ./data")
	}
	oneOf(r, "log.level", "level", c.Log.Level, "trace", "debug", "info", "warn", "error")
	oneOf(r, "log.format", "format", c.Log.Format, "json", "console")

	s := c.Server
	checkHostPort(r, "server.listen", s.Listen)
	if s.PublicURL != "" {
		checkURL(r, "server.public_url", s.PublicURL, "https://gw.example.com", "http", "https")
	}
	if s.MaxBody <= 0 {
		r.add("server.max_body", "must be more than 0, e.g. 1MiB")
	}
	positive(r, "server.request_timeout", s.RequestTimeout, "10s")
	if s.RateLimit.RequestsPerSecond < 0 {
		r.add("server.rate_limit.requests_per_second", "must be 0 (no limit) or more, e.g. 200")
	}
	if s.RateLimit.RequestsPerSecond > 0 && s.RateLimit.Burst < 1 {
		r.add("server.rate_limit.burst", "must be at least 1, e.g. 400")
	}

	checkBus(c, r)
	checkStore(c, r)

	ids := map[string]int{}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		p := indexPath("tenants", i)
		if checkName(r, p+".id", t.ID, "every tenant needs an id, e.g. id: acme") {
			if j, dup := ids[t.ID]; dup {
				r.add(p+".id", "duplicate tenant id %q: %s already uses it", t.ID, where(c.loc, indexPath("tenants", j)))
			} else {
				ids[t.ID] = i
			}
		}
		for _, ref := range channelsOf(t, p) {
			checkChannel(c, r, ref)
		}
		decodeAutomations(c, r, t, p)
		checkWebhooks(r, t, p)
	}
}

func checkBus(c *Config, r *report) {
	b := c.Bus
	if b.Embedded != nil && len(b.URLs) > 0 {
		r.add("bus.embedded", "cannot be used together with bus.urls: use embedded for the built-in NATS server or urls for an external one")
	}
	for i, u := range b.URLs {
		checkURL(r, indexPath("bus.urls", i), u, "nats://nats1:4222", "nats", "tls", "ws", "wss")
	}
	if b.Embedded != nil {
		if b.Embedded.StoreDir == "" && c.DataDir != "" {
			r.add("bus.embedded.store_dir", "must not be empty")
		}
		if b.Embedded.Listen != "" {
			checkHostPort(r, "bus.embedded.listen", b.Embedded.Listen)
		}
		if b.CredsFile != "" && len(b.URLs) == 0 {
			r.add("bus.creds_file", "only applies to an external NATS (bus.urls): remove it, the embedded server needs no credentials")
		}
	}
	positive(r, "bus.duplicate_window", b.DuplicateWindow, "2m")
	positive(r, "bus.status_max_age", b.StatusMaxAge, "72h")
	positive(r, "bus.inbound_max_age", b.InboundMaxAge, "72h")
	positive(r, "bus.ack_wait", b.AckWait, "30s")
	if b.MaxDeliver < 1 {
		r.add("bus.max_deliver", "must be at least 1, e.g. 10")
	}
}

// postgresDSN reports whether s looks like a PostgreSQL connection string (URL or key=value).
func postgresDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") || strings.Contains(s, "=")
}

func checkStore(c *Config, r *report) {
	st := c.Store
	if oneOf(r, "store.driver", "driver", st.Driver, StoreSQLite, StorePostgres) && st.Driver == StorePostgres {
		switch {
		case st.DSN == "":
			r.add("store.dsn", "required for postgres: set store.dsn or SWITCHBOARD_STORE_DSN, e.g. postgres://switchboard:secret@db:5432/switchboard")
		case !postgresDSN(st.DSN):
			r.add("store.dsn", "not a PostgreSQL connection string: use postgres://user:password@host:5432/db or key=value pairs")
		}
		if st.KeysDSN != "" && !postgresDSN(st.KeysDSN) {
			r.add("store.keys_dsn", "not a PostgreSQL connection string: use postgres://user:password@host:5432/keys (another database than store.dsn)")
		}
	}
	if st.Driver == StoreSQLite && st.KeysDSN != "" && filepath.Clean(strings.TrimPrefix(st.KeysDSN, "file:")) == filepath.Clean(strings.TrimPrefix(st.DSN, "file:")) {
		r.add("store.keys_dsn", "must be a file of its own, not the data file: leave it out for switchboard.keys.db beside it")
	}
	if st.BatchSize < 1 {
		r.add("store.batch_size", "must be at least 1, e.g. 256")
	}
	if st.BatchWait < 0 {
		r.add("store.batch_wait", "must not be negative, e.g. 2ms")
	}
}

func checkChannel(c *Config, r *report, ref channelRef) {
	cc, p := ref.cfg, ref.path
	if cc.Consent.ReplyWindow < 0 {
		r.add(p+".consent.reply_window", "must not be negative, e.g. 24h")
	}
	kp := p + ".consent.keywords"
	lists := []struct {
		name  string
		words []string
	}{
		{"opt_out", cc.Consent.Keywords.OptOut},
		{"opt_in", cc.Consent.Keywords.OptIn},
		{"help", cc.Consent.Keywords.Help},
	}
	desc := map[string]string{"opt_out": "opt-out", "opt_in": "opt-in", "help": "help"}
	owner := map[string]string{} // word → list name
	for _, l := range lists {
		for i, w := range l.words {
			if msg := keywordProblem(w); msg != "" {
				r.add(indexPath(kp+"."+l.name, i), "%s", msg)
				continue
			}
			w = strings.ToUpper(w)
			prev, dup := owner[w]
			if !dup {
				owner[w] = l.name
				continue
			}
			if prev == l.name {
				continue
			}
			// Point at the list that is written in the file; the other may be all built-in.
			at := l.name
			if _, ok := c.loc.lines[kp+"."+at]; !ok {
				at = prev
			}
			r.add(kp+"."+at, "%q is in both the %s and the %s keywords: keep it in one list", w, desc[prev], desc[l.name])
		}
	}

	if len(cc.Accounts) == 0 {
		r.add(p+".accounts", "a channel needs at least one account, e.g. accounts: [{name: main, driver: sandbox}]")
	}
	names := map[string]int{}
	for i := range cc.Accounts {
		a := &cc.Accounts[i]
		ap := indexPath(p+".accounts", i)
		if checkName(r, ap+".name", a.Name, "every account needs a name, e.g. name: sales") {
			if j, dup := names[a.Name]; dup {
				r.add(ap+".name", "duplicate account name %q: %s already uses it", a.Name, where(c.loc, indexPath(p+".accounts", j)))
			} else {
				names[a.Name] = i
			}
		}
		checkAccount(r, ref.ch, a, ap)
	}
}

func checkAccount(r *report, ch gateway.Channel, a *AccountConfig, ap string) {
	allowed := []string{DriverSandbox, DriverWhatsMeow}
	if ch == gateway.Teams {
		allowed = []string{DriverSandbox, DriverGraph}
	}
	switch {
	case a.Driver == "":
		r.add(ap+".driver", "missing: use %s", joinOr(allowed))
		return
	case !contains(allowed, a.Driver):
		if a.Driver == DriverWhatsMeow || a.Driver == DriverGraph {
			r.add(ap+".driver", "driver %q is not for %s accounts: use %s", a.Driver, ch, joinOr(allowed))
		} else {
			r.add(ap+".driver", "unknown driver %q: use %s", a.Driver, joinOr(allowed))
		}
		return
	}
	for _, sec := range []struct {
		name    string
		present bool
	}{{DriverSandbox, a.Sandbox != nil}, {DriverWhatsMeow, a.WhatsMeow != nil}, {DriverGraph, a.Graph != nil}} {
		if sec.present && sec.name != a.Driver {
			r.add(ap+"."+sec.name, "%s settings on an account whose driver is %s: remove them or set driver: %s", sec.name, a.Driver, sec.name)
		}
	}
	switch a.Driver {
	case DriverSandbox:
		if a.Sandbox != nil {
			checkSandbox(r, ch, a.Sandbox, ap+".sandbox")
		}
	case DriverWhatsMeow:
		if a.WhatsMeow != nil {
			checkWhatsMeow(r, a.WhatsMeow, ap+".whatsmeow")
		}
	case DriverGraph:
		if a.Graph == nil {
			r.add(ap+".graph", "missing: driver graph needs graph.tenant_id and graph.client_id")
			return
		}
		checkGraph(r, a.Graph, ap+".graph")
	}
}

func checkSandbox(r *report, ch gateway.Channel, s *SandboxConfig, p string) {
	if s.DeliveredAfter < 0 {
		r.add(p+".delivered_after", "must not be negative, e.g. 200ms")
	}
	if s.ReadAfter < 0 {
		r.add(p+".read_after", "must not be negative, e.g. 500ms")
	} else if s.ReadAfter < s.DeliveredAfter {
		r.add(p+".read_after", "%s is before delivered_after (%s): a message is read after it is delivered", s.ReadAfter, s.DeliveredAfter)
	}
	for i, to := range s.Fail {
		if _, err := gateway.ParseAddress(ch, to); err != nil {
			r.add(indexPath(p+".fail", i), "%s", gateway.ErrorMessage(err))
		}
	}
	if !validCode(s.FailCode) {
		r.add(p+".fail_code", "invalid code %q: use lower-case letters, digits and _, e.g. channel_error", s.FailCode)
	}
	for i, rep := range s.Replies {
		rp := indexPath(p+".replies", i)
		if rep.Match == "" {
			r.add(rp+".match", "missing: the text a sent message must contain to get this reply (\"*\" for every message)")
		}
		if rep.Text == "" {
			r.add(rp+".text", "missing: the text of the reply")
		}
	}
}

func checkWhatsMeow(r *report, w *WhatsMeowConfig, p string) {
	if w.RatePerMinute < 1 {
		r.add(p+".rate_per_minute", "must be at least 1, e.g. 20")
	}
	if w.Burst < 1 {
		r.add(p+".burst", "must be at least 1, e.g. 5")
	}
	if w.Jitter < 0 {
		r.add(p+".jitter", "must not be negative, e.g. 2s")
	}
	if w.FirstContactPerHour < 1 {
		r.add(p+".first_contact_per_hour", "must be at least 1, e.g. 10")
	}
	if w.ReachoutLock < time.Minute || w.ReachoutLock > 24*time.Hour {
		r.add(p+".reachout_lock", "must be between 1m and 24h, e.g. 1h")
	}
	if w.MediaMaxSize <= 0 {
		r.add(p+".media_max_size", "must be more than 0, e.g. 16MiB")
	}
	if strings.TrimSpace(w.DeviceName) == "" {
		r.add(p+".device_name", "must not be empty, e.g. Switchboard")
	}
}

func checkGraph(r *report, g *GraphConfig, p string) {
	if strings.TrimSpace(g.TenantID) == "" {
		r.add(p+".tenant_id", "missing: the Entra tenant id (a GUID or a domain such as contoso.onmicrosoft.com)")
	}
	if strings.TrimSpace(g.ClientID) == "" {
		r.add(p+".client_id", "missing: the application (client) id of the app registration")
	}
	creds := 0
	for _, s := range []string{g.ClientSecretEnv, g.ClientSecretFile, g.CertificateFile} {
		if s != "" {
			creds++
		}
	}
	if oneOf(r, p+".auth", "auth", g.Auth, AuthDelegated, AuthApplication) && g.Auth == AuthApplication {
		switch {
		case creds == 0:
			r.add(p+".auth", "application needs a credential: set client_secret_env, client_secret_file or certificate_file")
		case creds > 1:
			r.add(p+".auth", "set only one of client_secret_env, client_secret_file and certificate_file")
		}
	}
	if g.ClientSecretEnv != "" && !validEnvName(g.ClientSecretEnv) {
		r.add(p+".client_secret_env", "must be the name of an environment variable (e.g. TEAMS_CLIENT_SECRET), not the secret itself")
	}
	if _, _, ok := cloudEndpoints(g.Cloud); !ok {
		oneOf(r, p+".cloud", "cloud", g.Cloud, "public", "usgov", "china")
	}
	if g.AuthorityURL != "" {
		checkURL(r, p+".authority_url", g.AuthorityURL, "https://login.microsoftonline.com", "http", "https")
	}
	if g.GraphURL != "" {
		checkURL(r, p+".graph_url", g.GraphURL, "https://graph.microsoft.com", "http", "https")
	}
	for i, id := range g.Chats {
		if id == "" || strings.ContainsAny(id, "/ \t") {
			r.add(indexPath(p+".chats", i), "invalid chat id %q: use the chat's id, e.g. 19:abc…@thread.v2", id)
		}
	}
	for i, tc := range g.Channels {
		team, channel, ok := strings.Cut(tc, "/")
		if !ok || team == "" || channel == "" || strings.Contains(channel, "/") {
			r.add(indexPath(p+".channels", i), "invalid channel %q: use <team-id>/<channel-id>", tc)
		}
	}
	if g.PollInterval < time.Second {
		r.add(p+".poll_interval", "must be at least 1s, e.g. 30s")
	}
}

// checkName checks an id or account name and reports whether it is valid.
func checkName(r *report, path, name, missing string) bool {
	if name == "" {
		r.add(path, "missing: %s", missing)
		return false
	}
	if !validName(name) {
		r.add(path, "invalid name %q: use 1 to 32 of a-z, 0-9, _ and - (it becomes part of NATS subjects)", name)
		return false
	}
	return true
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validCode(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func validEnvName(s string) bool {
	for i, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// oneOf reports a value outside allowed and says whether it was valid.
func oneOf(r *report, path, noun, value string, allowed ...string) bool {
	if contains(allowed, value) {
		return true
	}
	if value == "" {
		r.add(path, "missing: use %s", joinOr(allowed))
	} else {
		r.add(path, "unknown %s %q: use %s", noun, value, joinOr(allowed))
	}
	return false
}

func positive(r *report, path string, d time.Duration, example string) {
	if d <= 0 {
		r.add(path, "must be more than 0, e.g. %s", example)
	}
}

func checkHostPort(r *report, path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		r.add(path, "invalid address %q: use host:port or :port, e.g. :8080 or 127.0.0.1:8080", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		r.add(path, "invalid port %q in %q: use a number from 0 to 65535", port, addr)
		return
	}
	if strings.ContainsAny(host, " /") {
		r.add(path, "invalid host %q in %q", host, addr)
	}
}

func checkURL(r *report, path, raw, example string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !contains(schemes, u.Scheme) {
		r.add(path, "invalid URL %q: use an absolute %s URL, e.g. %s", raw, joinOr(schemes), example)
		return
	}
	if u.RawQuery != "" || u.Fragment != "" {
		r.add(path, "URL %q must not have a query or fragment", raw)
	}
}

// where names a setting for a message: "tenants[0] (line 3)".
func where(loc *locations, path string) string {
	file, line := loc.find(path)
	if line > 0 && file == loc.file {
		return fmt.Sprintf("%s (line %d)", path, line)
	}
	return path
}

func (l *locations) overridden(path string) bool {
	_, ok := l.sources[path]
	return ok
}

func (l *locations) overriddenUnder(prefix string) bool {
	for p := range l.sources {
		if p == prefix || strings.HasPrefix(p, prefix+".") {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// joinOr formats a, b, c as "a, b or c".
func joinOr(items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}
