package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// healthz is liveness: the process serves HTTP. It checks nothing else, so a slow dependency
// never gets a healthy process restarted.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ gateway.APIKey) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type checkJSON struct {
	Name   string `json:"name"`
	Status string `json:"status"`          // ok | failed
	State  string `json:"state,omitempty"` // e.g. an account's unlinked, logged_out
}

type readyJSON struct {
	Status string       `json:"status"` // ready
	Checks []checkJSON  `json:"checks"`
	Error  *errorDetail `json:"error,omitempty"`
}

// readyz is readiness: every ReadyCheck passes within the request deadline. The checks run
// concurrently; a failure answers 503 unavailable naming the failed checks. Why a check failed
// is logged, not shown: the endpoint is unauthenticated.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ gateway.APIKey) error {
	checks := s.deps.Ready
	errs := make([]error, len(checks))
	done := make(chan int, len(checks))
	for i, c := range checks {
		go func() {
			defer func() {
				if v := recover(); v != nil {
					errs[i] = gateway.Errorf(gateway.EInternal, "check panicked: %s", panicText(v))
				}
				done <- i
			}()
			errs[i] = c.Check(r.Context())
		}()
	}
	finished := make([]bool, len(checks))
wait:
	for range checks {
		select {
		case i := <-done:
			finished[i] = true
		case <-r.Context().Done():
			break wait
		}
	}
	for { // after the deadline: take whatever finished meanwhile
		select {
		case i := <-done:
			finished[i] = true
			continue
		default:
		}
		break
	}

	out := readyJSON{Status: "ready", Checks: make([]checkJSON, len(checks))}
	var failed []string
	for i, c := range checks {
		out.Checks[i] = checkJSON{Name: c.Name, Status: "ok"}
		if c.State != nil {
			out.Checks[i].State = c.State()
		}
		var err error
		if !finished[i] {
			err = context.DeadlineExceeded
		} else {
			err = errs[i]
		}
		if err != nil {
			out.Checks[i].Status = "failed"
			failed = append(failed, c.Name)
			s.log.Warn().Str("check", c.Name).Err(err).Msg("readiness check failed")
		}
	}
	if len(failed) == 0 {
		return writeJSON(w, http.StatusOK, out)
	}
	out.Status = "unavailable"
	out.Error = &errorDetail{Code: gateway.EUnavailable, Message: "not ready: " + strings.Join(failed, ", ")}
	if rw, ok := w.(*responseWriter); ok {
		rw.code = gateway.EUnavailable
	}
	return writeJSON(w, HTTPStatus(gateway.EUnavailable), out)
}
