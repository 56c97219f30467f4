package server

import (
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway/dashboard"
)

// withDashboard serves the dashboard at / and under dashboard.Prefix, and the API everywhere else
// (its JSON 404 included). The dashboard reaches the API in-process. Behind a proxy that ends TLS
// (an https public URL) its session cookie is Secure too.
func withDashboard(apiHandler http.Handler, publicURL string, log zerolog.Logger) http.Handler {
	d := dashboard.New(dashboard.Config{API: apiHandler, SecureCookie: strings.HasPrefix(publicURL, "https://"), Log: log})
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", d)
	mux.Handle(dashboard.Prefix, d)
	mux.Handle("/", apiHandler)
	return mux
}
