package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// BenchmarkAccept measures POST /v1/messages through the whole handler chain (key cache, rate
// limit, decode, validation with libphonenumber, access log) with an Intake that does nothing,
// next to a trivial handler that answers 202, so the API's own cost per send is visible.
func BenchmarkAccept(b *testing.B) {
	body := `{"channel":"whatsapp","to":"+4915112345678","text":"Your invoice 2026-118 is ready","metadata":{"order":"A-1"}}`
	newServer := func(log zerolog.Logger) http.Handler {
		return api.New(api.Config{Log: log, RatePerSecond: 1e9}, api.Deps{
			Intake:    noopIntake{},
			Messages:  newFakeMessages(),
			Keys:      &fakeKeys{keys: map[string]gateway.APIKey{secretAcme: {ID: "key_acme", Tenant: "acme"}}},
			Directory: fakeDirectory{"acme": {gateway.WhatsApp: {"sales"}, gateway.Teams: {"ops"}}},
		})
	}
	teams := `{"to":"teams:chat:19:abc@thread.v2","text":"Your invoice 2026-118 is ready","metadata":{"order":"A-1"}}`
	run := func(b *testing.B, h http.Handler, idempotent bool, body string) {
		r := strings.NewReader(body)
		req := httptest.NewRequest("POST", "/v1/messages", r)
		req.Header.Set("Authorization", "Bearer "+secretAcme)
		req.Header.Set("Content-Type", "application/json")
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			r.Reset(body)
			req.Body = io.NopCloser(r)
			if idempotent {
				req.Header.Set("Idempotency-Key", "key-"+strconv.Itoa(i))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	}
	b.Run("trivial-202", func(b *testing.B) {
		run(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"id":"msg_x","status":"accepted"}`))
		}), false, body)
	})
	b.Run("accept", func(b *testing.B) { run(b, newServer(zerolog.Nop()), false, body) })
	b.Run("accept-idempotency-key", func(b *testing.B) { run(b, newServer(zerolog.Nop()), true, body) })
	b.Run("accept-access-log", func(b *testing.B) { run(b, newServer(zerolog.New(io.Discard)), false, body) })
	// A Teams recipient: the same path without libphonenumber, to show what the API itself costs.
	b.Run("accept-teams", func(b *testing.B) { run(b, newServer(zerolog.Nop()), false, teams) })
}
