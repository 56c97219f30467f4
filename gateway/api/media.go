package api

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// MediaFiles keeps uploaded attachments (store.MediaFiles implements it).
type MediaFiles interface {
	PutMedia(ctx context.Context, f gateway.MediaFile, data []byte) error
	MediaInfo(ctx context.Context, tenant, id string) (gateway.MediaFile, error)
	DeleteMedia(ctx context.Context, tenant, id string) error
}

// Media defaults.
const (
	DefaultMaxMediaBytes = 100 << 20 // WhatsApp's document limit; images, audio and video are held to 16 MiB at send
	DefaultMediaTTL      = 7 * 24 * time.Hour
)

func (s *Server) mediaRoutes() {
	s.handle("POST /v1/media", 0, s.uploadMedia, "filename")
	s.handle("GET /v1/media/{id}", 0, s.getMedia)
	s.handle("DELETE /v1/media/{id}", 0, s.deleteMedia)
}

// uploadMedia stores one file sent as the raw body (its Content-Type, ?filename=) or as the part
// named "file" of a multipart/form-data body (curl -F file=@invoice.pdf).
func (s *Server) uploadMedia(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	limit := s.cfg.MaxMediaBytes
	if r.ContentLength > limit+multipartSlack {
		return tooLarge(limit)
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(w, r.Body, limit+multipartSlack)
	filename := r.URL.Query().Get("filename")
	var src io.Reader = body
	if mt == "multipart/form-data" {
		part, err := filePart(multipart.NewReader(body, params["boundary"]))
		if err != nil {
			return err
		}
		defer part.Close()
		src, filename = part, part.FileName()
		mt, _, _ = mime.ParseMediaType(part.Header.Get("Content-Type"))
	}
	data, err := io.ReadAll(io.LimitReader(src, limit+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), int64(len(data)) > limit:
		return tooLarge(limit)
	case err != nil:
		return gateway.WrapError(gateway.EInvalidField, err, "could not read the upload")
	case len(data) == 0:
		return gateway.FieldErrorf(gateway.EMissingField, "body", "the upload is empty: send the file as the body or as the multipart part \"file\"")
	}
	if mt == "" || mt == "application/octet-stream" {
		mt, _, _ = mime.ParseMediaType(http.DetectContentType(data))
	}
	if !gateway.MediaTypeAllowed(gateway.DefaultMediaTypes(), mt) {
		return gateway.FieldErrorf(gateway.EInvalidField, "Content-Type", "files of type %q are not accepted; send an image, video, audio, PDF, office document, text or CSV file", mt)
	}
	if len(filename) > MaxFilenameLen || strings.ContainsAny(filename, "/\\\x00") {
		return gateway.FieldErrorf(gateway.EInvalidField, "filename", "must be a file name of at most %d characters, without path separators", MaxFilenameLen)
	}
	now := s.now().UTC()
	f := gateway.MediaFile{ID: gateway.NewMediaID(), Tenant: key.Tenant, MIMEType: mt, Filename: filename,
		Size: int64(len(data)), CreatedAt: now, ExpiresAt: now.Add(s.cfg.MediaTTL)}
	if err := s.deps.Media.PutMedia(r.Context(), f, data); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/media/"+f.ID)
	return writeJSON(w, http.StatusCreated, f)
}

// multipartSlack is room for a multipart body's boundaries and part headers around the file.
const multipartSlack = 64 << 10

func tooLarge(limit int64) error {
	return gateway.Errorf(gateway.EBodyTooLarge, "the file is larger than %d bytes", limit)
}

// filePart returns the multipart part named "file".
func filePart(mr *multipart.Reader) (*multipart.Part, error) {
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, gateway.FieldErrorf(gateway.EMissingField, "file", "the multipart body has no part named \"file\"")
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, gateway.Errorf(gateway.EBodyTooLarge, "the upload is too large")
		}
		if err != nil {
			return nil, gateway.WrapError(gateway.EInvalidField, err, "the multipart body is malformed")
		}
		if p.FormName() == "file" {
			return p, nil
		}
		p.Close()
	}
}

func (s *Server) getMedia(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	f, err := s.deps.Media.MediaInfo(r.Context(), key.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, f)
}

func (s *Server) deleteMedia(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	if err := s.deps.Media.DeleteMedia(r.Context(), key.Tenant, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// attachUpload checks that an uploaded file a send names exists, and fills in its type and name.
func (s *Server) attachUpload(ctx context.Context, m *gateway.Message) error {
	media := m.Content.Media
	if media == nil || media.ID == "" {
		return nil
	}
	if m.Channel != gateway.WhatsApp {
		return gateway.FieldErrorf(gateway.EInvalidField, "media.id", "uploaded files are sent on WhatsApp; a %s message takes media.url", m.Channel)
	}
	if s.deps.Media == nil {
		return gateway.FieldErrorf(gateway.EInvalidField, "media.id", "this gateway does not keep uploaded files; use media.url")
	}
	f, err := s.deps.Media.MediaInfo(ctx, m.Tenant, media.ID)
	if gateway.ErrorCode(err) == gateway.ENotFound {
		return gateway.FieldErrorf(gateway.EInvalidField, "media.id", "no uploaded file %s (it may have expired): upload it with POST /v1/media", media.ID)
	}
	if err != nil {
		return err
	}
	media.MIMEType = f.MIMEType
	if media.Filename == "" {
		media.Filename = f.Filename
	}
	return nil
}
