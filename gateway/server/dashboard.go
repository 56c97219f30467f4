package server

import (
	"net/http"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway/dashboard"
)

// withDashboard serves the dashboard at / and under dashboard.Prefix, and the API everywhere else
// (its JSON 404 included). The dashboard reaches the API in-process.
func withDashboard(apiHandler http.Handler, log zerolog.Logger) http.Handler {
	d := dashboard.New(dashboard.Config{API: apiHandler, Log: log})
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", d)
	mux.Handle(dashboard.Prefix, d)
	mux.Handle("/", apiHandler)
	return mux
}
