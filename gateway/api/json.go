package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// decodeJSON reads exactly one JSON object from the body into v, strictly: no unknown fields,
// nothing after the object, at most MaxBody bytes. Its errors carry the codes of the API and
// name the byte offset (malformed JSON) or the field (wrong type, unknown field).
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > s.cfg.MaxBody {
		return s.tooLarge()
	}
	// The underlying writer, so net/http can close the connection after an oversized body.
	if rw, ok := w.(*responseWriter); ok {
		w = rw.ResponseWriter
	}
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return s.jsonError(err, body.n)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return s.tooLarge()
		}
		return gateway.Errorf(gateway.EInvalidJSON, "unexpected data after the JSON object, which ends at byte %d", end)
	}
	return nil
}

func (s *Server) tooLarge() error {
	return gateway.Errorf(gateway.EBodyTooLarge, "the request body is larger than %d bytes", s.cfg.MaxBody)
}

// jsonError turns a decoding error into an API error.
func (s *Server) jsonError(err error, read int64) error {
	var (
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		tooBig   *http.MaxBytesError
		invalidU *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &tooBig):
		return s.tooLarge()
	case errors.Is(err, io.EOF):
		return gateway.Errorf(gateway.EInvalidJSON, "the request body is empty: expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return gateway.Errorf(gateway.EInvalidJSON, "malformed JSON: the body ends after %d bytes, before the object is complete", read)
	case errors.As(err, &syntax):
		return gateway.Errorf(gateway.EInvalidJSON, "malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return gateway.Errorf(gateway.EInvalidJSON, "expected a JSON object, got %s", jsonKind(typ.Value))
		}
		if isMapField(typ.Field) && typ.Type != nil && typ.Type.Kind() != reflect.Map {
			// A map value of the wrong type: encoding/json names the map, not the key.
			return gateway.FieldErrorf(gateway.EInvalidField, typ.Field, "values must be %s, not %s", describeType(typ.Type), jsonKind(typ.Value))
		}
		return gateway.FieldErrorf(gateway.EInvalidField, typ.Field, "must be %s, not %s", describeType(typ.Type), jsonKind(typ.Value))
	case errors.As(err, &invalidU):
		return gateway.WrapError(gateway.EInternal, err, "decoding into %T", invalidU.Type)
	}
	// DisallowUnknownFields reports `json: unknown field "name"` with no error type of its own.
	if rest, ok := strings.CutPrefix(err.Error(), `json: unknown field `); ok {
		name, uerr := strconv.Unquote(rest)
		if uerr != nil {
			name = strings.Trim(rest, `"`)
		}
		return gateway.FieldErrorf(gateway.EUnknownField, name, "unknown field %q", name)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return gateway.WrapError(gateway.ETimeout, err, "the request body did not arrive within %s", s.cfg.Timeout)
	}
	// Anything else is a failed read of the body (the client stalled or went away).
	return gateway.WrapError(gateway.EInvalidJSON, err, "the request body could not be read")
}

// countingReader counts the bytes read, to say where a truncated body ends.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// jsonKind names a JSON value kind as UnmarshalTypeError.Value reports it ("number 1.5" → a number).
func jsonKind(v string) string {
	kind, _, _ := strings.Cut(v, " ")
	switch kind {
	case "object", "array":
		return "an " + kind
	case "string", "number":
		return "a " + kind
	case "bool":
		return "a boolean"
	case "":
		return "a value"
	}
	return kind
}

// describeType names the JSON a Go type expects.
func describeType(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map:
		return "an object of " + strings.TrimPrefix(strings.TrimPrefix(describeType(t.Elem()), "a "), "an ") + "s"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct:
		return "an object"
	}
	return "a value"
}

// writeJSON writes v with status. It returns an error only when v cannot be encoded, before
// anything was written; a failed write means the client is gone and there is no one to tell.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote <placeholders>; this is not HTML
	if err := enc.Encode(v); err != nil {
		return gateway.WrapError(gateway.EInternal, err, "encoding the response")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// isMapField reports whether a request field is a JSON object of strings.
func isMapField(field string) bool { return field == "metadata" || field == "template.params" }
