package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one signed-in browser. The API key stays here, on the server: the browser holds only
// the random session id (in an HttpOnly cookie) and the CSRF token (in the page).
type session struct {
	apiKey    string
	keyPrefix string // the key's display prefix (sbk_ and 8 characters), to show who is signed in
	csrf      string
	created   time.Time
	lastSeen  time.Time
}

// sessions is the in-memory session table. Sessions end after IdleTimeout without a request, or
// MaxAge after sign-in, whichever comes first; a restart signs everyone out.
type sessions struct {
	idle, maxAge time.Duration
	max          int
	now          func() time.Time

	mu sync.Mutex
	m  map[string]*session
}

func newSessions(idle, maxAge time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{idle: idle, maxAge: maxAge, max: max, now: now, m: map[string]*session{}}
}

// randomToken returns 32 random bytes, URL-safe base64.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for apiKey and returns its id; false when the table is full of live
// sessions.
func (s *sessions) create(apiKey, keyPrefix string) (string, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		for id, ss := range s.m {
			if s.expired(ss, now) {
				delete(s.m, id)
			}
		}
		if len(s.m) >= s.max {
			return "", false
		}
	}
	id := randomToken()
	s.m[id] = &session{apiKey: apiKey, keyPrefix: keyPrefix, csrf: randomToken(), created: now, lastSeen: now}
	return id, true
}

// get returns a copy of the live session id and marks it used; an expired one is removed.
func (s *sessions) get(id string) (session, bool) {
	if id == "" {
		return session{}, false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	if !ok {
		return session{}, false
	}
	if s.expired(ss, now) {
		delete(s.m, id)
		return session{}, false
	}
	ss.lastSeen = now
	return *ss, true
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.lastSeen) >= s.idle || now.Sub(ss.created) >= s.maxAge
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// validCSRF compares a presented token with the session's in constant time.
func (ss session) validCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(ss.csrf)) == 1
}
