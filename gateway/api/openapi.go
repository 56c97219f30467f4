package api

import (
	_ "embed"
	"net/http"
	"slices"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// openAPIDocument is the OpenAPI 3.1 description of the API, kept honest by TestOpenAPI: every
// registered route is in it and everything in it is registered.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns a copy of the OpenAPI document served at /v1/openapi.json.
func OpenAPIDocument() []byte { return slices.Clone(openAPIDocument) }

// Routes returns the patterns registered on this server ("POST /v1/messages", …), without the
// catch-all.
func (s *Server) Routes() []string { return slices.Clone(s.patterns) }

func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request, _ gateway.APIKey) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, err := w.Write(openAPIDocument)
	return err
}
