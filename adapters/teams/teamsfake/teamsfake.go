// Package teamsfake fakes Microsoft's side of the Teams adapter at the wire: the identity
// platform (openid-configuration, devicecode and token endpoints, over TLS as MSAL requires) and
// Microsoft Graph (chat and channel messages, replies, one-on-one chat creation, subscriptions).
// Tests point the real adapter — MSAL and the msgraph SDK — at them through authority_url and
// graph_url. It does not import the Graph SDK.
package teamsfake

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Identities the fakes use.
const (
	TenantID      = "aad-tenant-1"
	ClientID      = "client-1"
	ServiceUserID = "svc-user-oid"
)

// Authority is the fake identity platform: openid-configuration, devicecode and token endpoints
// over TLS (MSAL only talks to https authorities). It issues opaque access and refresh tokens,
// rotates refresh tokens, and accepts the client secret ClientSecret. Set the exported fields
// before the first request.
type Authority struct {
	srv *httptest.Server

	mu             sync.Mutex
	n              int
	accessTokens   map[string]bool // issued and valid
	refreshTokens  map[string]bool
	deviceCodes    int
	deviceGrants   int
	refreshGrants  int
	clientGrants   int
	PendingPolls   int // device-code polls to answer authorization_pending first
	AccessLifetime int // seconds
	ClientSecret   string
	// ClientCertificate, when set, is the app registration's certificate: a client_credentials
	// grant may then authenticate with a client assertion signed by its private key.
	ClientCertificate *x509.Certificate
}

// NewAuthority starts a fake authority, stopped when the test ends.
func NewAuthority(t testing.TB) *Authority {
	f := &Authority{accessTokens: map[string]bool{}, refreshTokens: map[string]bool{}, AccessLifetime: 3600, PendingPolls: 1, ClientSecret: "app-secret"}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *Authority) base() string { return f.srv.URL + "/" + TenantID }

func (f *Authority) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		writeJSON(w, 200, map[string]any{
			"token_endpoint":                f.base() + "/oauth2/v2.0/token",
			"authorization_endpoint":        f.base() + "/oauth2/v2.0/authorize",
			"device_authorization_endpoint": f.base() + "/oauth2/v2.0/devicecode",
			"issuer":                        f.base() + "/v2.0",
		})
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/devicecode"):
		f.mu.Lock()
		f.deviceCodes++
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{
			"device_code": "device-code-1", "user_code": "ABCD-EFGH",
			"verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1,
			"message": "To sign in, open https://microsoft.com/devicelogin and enter ABCD-EFGH.",
		})
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		if err := r.ParseForm(); err != nil {
			writeJSON(w, 400, map[string]any{"error": "invalid_request"})
			return
		}
		f.token(w, r.PostForm)
	default:
		http.NotFound(w, r)
	}
}

func (f *Authority) token(w http.ResponseWriter, form url.Values) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch form.Get("grant_type") {
	case "device_code", "urn:ietf:params:oauth:grant-type:device_code":
		if f.PendingPolls > 0 {
			f.PendingPolls--
			writeJSON(w, 400, map[string]any{"error": "authorization_pending"})
			return
		}
		f.deviceGrants++
	case "refresh_token":
		if !f.refreshTokens[form.Get("refresh_token")] {
			writeJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "AADSTS70008: The refresh token has expired."})
			return
		}
		delete(f.refreshTokens, form.Get("refresh_token")) // rotated
		f.refreshGrants++
	case "client_credentials":
		if a := form.Get("client_assertion"); a != "" {
			if err := f.verifyAssertion(a); err != nil {
				writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": err.Error()})
				return
			}
		} else if form.Get("client_secret") != f.ClientSecret {
			writeJSON(w, 401, map[string]any{"error": "invalid_client"})
			return
		}
		f.clientGrants++
		f.n++
		at := fmt.Sprintf("fake-app-access-token-%d", f.n)
		f.accessTokens[at] = true
		writeJSON(w, 200, map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": f.AccessLifetime})
		return
	default:
		writeJSON(w, 400, map[string]any{"error": "unsupported_grant_type"})
		return
	}
	f.n++
	at := fmt.Sprintf("fake-access-token-%d", f.n)
	rt := fmt.Sprintf("fake-refresh-token-%d", f.n)
	f.accessTokens[at], f.refreshTokens[rt] = true, true
	b64 := base64.RawURLEncoding.EncodeToString
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{
		"aud": ClientID, "iss": f.base() + "/v2.0", "iat": now, "nbf": now, "exp": now + 3600,
		"oid": ServiceUserID, "sub": "sub-1", "tid": TenantID, "preferred_username": "svc@example.com", "name": "Service",
	})
	info, _ := json.Marshal(map[string]string{"uid": ServiceUserID, "utid": TenantID})
	writeJSON(w, 200, map[string]any{
		"token_type": "Bearer", "scope": form.Get("scope"), "expires_in": f.AccessLifetime,
		"access_token": at, "refresh_token": rt,
		"id_token":    b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claims) + ".sig",
		"client_info": b64(info),
	})
}

// verifyAssertion checks a client assertion as the identity platform does: a JWT about our
// client, signed (RS256 or PS256) by the registered certificate's key.
func (f *Authority) verifyAssertion(jwt string) error {
	if f.ClientCertificate == nil {
		return fmt.Errorf("no certificate registered")
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	var header struct{ Alg string }
	var claims struct{ Iss, Sub string }
	for i, v := range []any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			return fmt.Errorf("bad JWT part %d", i)
		}
	}
	if claims.Sub != ClientID || claims.Iss != ClientID {
		return fmt.Errorf("assertion is about %q, not the client", claims.Sub)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	pub, ok := f.ClientCertificate.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("the registered certificate has no RSA key")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if header.Alg == "PS256" {
		return rsa.VerifyPSS(pub, crypto.SHA256, sum[:], sig, nil)
	}
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

// Valid reports whether token is a live access token.
func (f *Authority) Valid(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accessTokens[token]
}

// Revoke invalidates every token, as an admin revoking the service user's sessions does.
func (f *Authority) Revoke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accessTokens, f.refreshTokens = map[string]bool{}, map[string]bool{}
}

// Counts tells how many device codes were issued, and device-code and refresh grants served.
func (f *Authority) Counts() (deviceCodes, deviceGrants, refreshGrants int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deviceCodes, f.deviceGrants, f.refreshGrants
}

// Tokens returns every live access and refresh token.
func (f *Authority) Tokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for t := range f.accessTokens {
		out = append(out, t)
	}
	for t := range f.refreshTokens {
		out = append(out, t)
	}
	return out
}

// Request is one request the fake Graph received, its JSON body decoded.
type Request struct {
	Method, Path, Query, Auth string
	Body                      map[string]any
}

type scripted struct {
	status  int
	headers map[string]string
}

// Message is a chat or channel message the fake Graph holds.
type Message struct {
	ID, From, FromName, Type, HTML string
	At                             time.Time
	ReplyTo                        string
}

// Graph is the fake Microsoft Graph v1.0: chat and channel messages (post, list newest first
// with $top and nextLink paging, get), replies, one-on-one chat creation (the same chat again for
// the same user, as Graph does), subscriptions (create, renew). Every request must carry a
// bearer token the Authority issued, or it gets 401.
type Graph struct {
	t    testing.TB
	srv  *httptest.Server
	auth *Authority

	mu       sync.Mutex
	requests []Request
	script   map[string][]scripted // "METHOD path" → responses to give first
	n        int
	chats    map[string][]Message // chat or "team/channel" → messages, oldest first
	oneOnOne map[string]string    // user → chat id
	subs     map[string]time.Time
	events   chan Request // every request, for tests that wait
}

// NewGraph starts a fake Graph that trusts auth's tokens, stopped when the test ends.
func NewGraph(t testing.TB, auth *Authority) *Graph {
	g := &Graph{t: t, auth: auth, script: map[string][]scripted{}, chats: map[string][]Message{},
		oneOnOne: map[string]string{}, subs: map[string]time.Time{}, events: make(chan Request, 1000)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

// Fail makes the next request METHOD path answer status (with headers) instead; calls queue.
func (g *Graph) Fail(method, path string, status int, headers map[string]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.script[method+" "+path] = append(g.script[method+" "+path], scripted{status, headers})
}

// Add puts a message into a chat ("19:…") or channel ("team/channel"), as if someone wrote it.
func (g *Graph) Add(where string, m Message) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.Type == "" {
		m.Type = "message"
	}
	g.chats[where] = append(g.chats[where], m)
}

// Requests returns every request so far.
func (g *Graph) Requests() []Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Request(nil), g.requests...)
}

// Count counts the requests METHOD path so far.
func (g *Graph) Count(method, path string) int {
	n := 0
	for _, r := range g.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// WaitFor returns the next request (not yet waited past) with method and a path starting with
// prefix; it fails the test after 10 s.
func (g *Graph) WaitFor(t testing.TB, method, prefix string) Request {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-g.events:
			if r.Method == method && strings.HasPrefix(r.Path, prefix) {
				return r
			}
		case <-timeout:
			t.Fatalf("no %s %s request reached the fake Graph", method, prefix)
		}
	}
}

func (g *Graph) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Auth: r.Header.Get("Authorization")}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		if err := json.Unmarshal(b, &req.Body); err != nil {
			g.t.Errorf("fake graph: %s %s: body is not JSON: %v", r.Method, r.URL.Path, err)
		}
	}
	g.mu.Lock()
	g.requests = append(g.requests, req)
	g.mu.Unlock()
	select {
	case g.events <- req:
	default:
	}
	if !strings.HasPrefix(req.Auth, "Bearer ") || !g.auth.Valid(strings.TrimPrefix(req.Auth, "Bearer ")) {
		writeJSON(w, 401, odataError("InvalidAuthenticationToken", "Access token is empty or invalid."))
		return
	}
	g.mu.Lock()
	if q := g.script[req.Method+" "+req.Path]; len(q) > 0 {
		g.script[req.Method+" "+req.Path] = q[1:]
		g.mu.Unlock()
		for k, v := range q[0].headers {
			w.Header().Set(k, v)
		}
		writeJSON(w, q[0].status, odataError("Scripted", http.StatusText(q[0].status)))
		return
	}
	g.mu.Unlock()

	p := strings.Split(strings.TrimPrefix(req.Path, "/v1.0/"), "/")
	switch {
	case req.Method == "POST" && len(p) == 1 && p[0] == "chats":
		g.createChat(w, req)
	case len(p) == 3 && p[0] == "chats" && p[2] == "messages":
		g.messages(w, r, req, p[1])
	case req.Method == "GET" && len(p) == 4 && p[0] == "chats" && p[2] == "messages":
		g.getMessage(w, p[1], p[3])
	case len(p) == 5 && p[0] == "teams" && p[2] == "channels" && p[4] == "messages":
		g.messages(w, r, req, p[1]+"/"+p[3])
	case req.Method == "GET" && len(p) == 6 && p[0] == "teams" && p[4] == "messages":
		g.getMessage(w, p[1]+"/"+p[3], p[5])
	case req.Method == "POST" && len(p) == 7 && p[0] == "teams" && p[6] == "replies":
		g.post(w, req, p[1]+"/"+p[3]+"#"+p[5])
	case req.Method == "POST" && len(p) == 1 && p[0] == "subscriptions":
		g.mu.Lock()
		g.n++
		id := fmt.Sprintf("sub-%d", g.n)
		exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(req.Body["expirationDateTime"]))
		g.subs[id] = exp
		g.mu.Unlock()
		body := map[string]any{"id": id}
		for k, v := range req.Body {
			body[k] = v
		}
		writeJSON(w, 201, body)
	case req.Method == "PATCH" && len(p) == 2 && p[0] == "subscriptions":
		g.mu.Lock()
		_, ok := g.subs[p[1]]
		if ok {
			exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(req.Body["expirationDateTime"]))
			g.subs[p[1]] = exp
		}
		g.mu.Unlock()
		if !ok {
			writeJSON(w, 404, odataError("ResourceNotFound", "no such subscription"))
			return
		}
		writeJSON(w, 200, map[string]any{"id": p[1], "expirationDateTime": req.Body["expirationDateTime"]})
	default:
		writeJSON(w, 404, odataError("NotFound", "fake graph has no "+req.Method+" "+req.Path))
	}
}

func (g *Graph) createChat(w http.ResponseWriter, req Request) {
	if req.Body["chatType"] != "oneOnOne" {
		writeJSON(w, 400, odataError("BadRequest", "only oneOnOne"))
		return
	}
	members, _ := req.Body["members"].([]any)
	var users []string
	for _, m := range members {
		mm, _ := m.(map[string]any)
		bind, _ := mm["user@odata.bind"].(string)
		i, j := strings.Index(bind, "users('"), strings.LastIndex(bind, "')")
		if i < 0 || j < i || mm["@odata.type"] != "#microsoft.graph.aadUserConversationMember" {
			writeJSON(w, 400, odataError("BadRequest", "bad member"))
			return
		}
		users = append(users, bind[i+7:j])
	}
	if len(users) != 2 || users[0] != ServiceUserID {
		writeJSON(w, 400, odataError("BadRequest", "a oneOnOne chat needs the caller and one user"))
		return
	}
	g.mu.Lock()
	id, ok := g.oneOnOne[users[1]]
	if !ok {
		id = "19:" + users[1] + "_" + ServiceUserID + "@unq.gbl.spaces"
		g.oneOnOne[users[1]] = id
	}
	g.mu.Unlock()
	writeJSON(w, 201, map[string]any{"id": id, "chatType": "oneOnOne"})
}

func (g *Graph) messages(w http.ResponseWriter, r *http.Request, req Request, where string) {
	if req.Method == "POST" {
		g.post(w, req, where)
		return
	}
	g.mu.Lock()
	all := append([]Message(nil), g.chats[where]...)
	g.mu.Unlock()
	sort.SliceStable(all, func(i, j int) bool { return all[i].At.After(all[j].At) }) // newest first
	top, _ := strconv.Atoi(r.URL.Query().Get("$top"))
	if top <= 0 {
		top = 20
	}
	skip, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	end := min(skip+top, len(all))
	var value []any
	for _, m := range all[min(skip, len(all)):end] {
		value = append(value, messageJSON(m))
	}
	body := map[string]any{"value": value}
	if end < len(all) {
		q := r.URL.Query()
		q.Set("$skiptoken", strconv.Itoa(end))
		q.Set("$top", strconv.Itoa(top))
		body["@odata.nextLink"] = g.srv.URL + r.URL.Path + "?" + q.Encode()
	}
	writeJSON(w, 200, body)
}

func (g *Graph) getMessage(w http.ResponseWriter, where, id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.chats[where] {
		if m.ID == id {
			writeJSON(w, 200, messageJSON(m))
			return
		}
	}
	writeJSON(w, 404, odataError("NotFound", "no such message"))
}

func (g *Graph) post(w http.ResponseWriter, req Request, where string) {
	body, _ := req.Body["body"].(map[string]any)
	if body["contentType"] != "html" {
		writeJSON(w, 400, odataError("BadRequest", "contentType must be html"))
		return
	}
	g.mu.Lock()
	g.n++
	id := strconv.FormatInt(1700000000000+int64(g.n), 10)
	g.chats[where] = append(g.chats[where], Message{ID: id, From: ServiceUserID, Type: "message", HTML: fmt.Sprint(body["content"]), At: time.Now()})
	g.mu.Unlock()
	writeJSON(w, 201, map[string]any{"id": id, "messageType": "message", "body": body})
}

func messageJSON(m Message) map[string]any {
	out := map[string]any{
		"id": m.ID, "messageType": m.Type, "createdDateTime": m.At.UTC().Format("2006-01-02T15:04:05.000Z"),
		"body": map[string]any{"contentType": "html", "content": m.HTML},
	}
	if m.From != "" {
		out["from"] = map[string]any{"user": map[string]any{"id": m.From, "displayName": m.FromName, "userIdentityType": "aadUser"}}
	}
	if m.ReplyTo != "" {
		out["replyToId"] = m.ReplyTo
	}
	return out
}

func odataError(code, msg string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "message": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// URL is the authority host to configure as authority_url (the tenant id is appended).
func (f *Authority) URL() string { return f.srv.URL }

// Client trusts the authority's certificate; give it to the adapter as its HTTP client.
func (f *Authority) Client() *http.Client { return f.srv.Client() }

// URL is the Graph root to configure as graph_url.
func (g *Graph) URL() string { return g.srv.URL }

// Messages returns what a chat ("19:…") or channel ("team/channel"; a thread: "team/channel#root")
// holds, oldest first.
func (g *Graph) Messages(where string) []Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Message(nil), g.chats[where]...)
}

// DropSubscription forgets a subscription, as Graph does when it expires or is deleted.
func (g *Graph) DropSubscription(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.subs, id)
}
