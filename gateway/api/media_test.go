package api_test

import (
	"bytes"
	"context"
	"mime/multipart"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// fakeMedia keeps uploads in memory, per tenant.
type fakeMedia struct {
	mu    sync.Mutex
	files map[string]gateway.MediaFile
	data  map[string][]byte
}

func (f *fakeMedia) PutMedia(_ context.Context, m gateway.MediaFile, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[m.ID], f.data[m.ID] = m, data
	return nil
}

func (f *fakeMedia) MediaInfo(_ context.Context, tenant, id string) (gateway.MediaFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.files[id]
	if !ok || m.Tenant != tenant {
		return gateway.MediaFile{}, gateway.Errorf(gateway.ENotFound, "no media file %s", id)
	}
	return m, nil
}

func (f *fakeMedia) DeleteMedia(ctx context.Context, tenant, id string) error {
	if _, err := f.MediaInfo(ctx, tenant, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.files, id)
	return nil
}

const testMaxMedia = 4096

func withMedia(m *fakeMedia) option {
	return func(c *api.Config, d *api.Deps) {
		c.MaxMediaBytes = testMaxMedia
		d.Media = m
	}
}

func upload(secret, contentType, path, body string) req {
	return req{method: "POST", path: path, secret: secret, body: body, header: map[string]string{"Content-Type": contentType}}
}

func multipartBody(t *testing.T, field, filename, contentType string, data []byte) (string, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	h := map[string][]string{"Content-Disposition": {`form-data; name="` + field + `"; filename="` + filename + `"`}}
	if contentType != "" {
		h["Content-Type"] = []string{contentType}
	}
	p, err := w.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data)
	w.Close()
	return b.String(), w.FormDataContentType()
}

func TestMediaUploadAndSend(t *testing.T) {
	media := &fakeMedia{files: map[string]gateway.MediaFile{}, data: map[string][]byte{}}
	e := newEnv(t, withMedia(media))
	pdf := "%PDF-1.7 invoice"

	raw := e.do(upload(secretAcme, "application/pdf", "/v1/media?filename=invoice.pdf", pdf))
	if raw.status != 201 || raw.body["mime_type"] != "application/pdf" || raw.body["filename"] != "invoice.pdf" || raw.body["size"] != float64(len(pdf)) ||
		raw.header.Get("Location") != "/v1/media/"+raw.body["id"].(string) {
		t.Fatalf("raw upload: %d %s", raw.status, raw.raw)
	}
	id := raw.body["id"].(string)

	body, ct := multipartBody(t, "file", "photo.png", "", []byte("\x89PNG\r\n\x1a\n rest of a png"))
	mp := e.do(upload(secretAcme, ct, "/v1/media", body))
	if mp.status != 201 || mp.body["mime_type"] != "image/png" || mp.body["filename"] != "photo.png" {
		t.Fatalf("multipart upload (type sniffed): %d %s", mp.status, mp.raw)
	}

	if got := e.do(req{method: "GET", path: "/v1/media/" + id, secret: secretAcme}); got.status != 200 || got.body["id"] != id {
		t.Fatalf("get: %d %s", got.status, got.raw)
	}
	if got := e.do(req{method: "GET", path: "/v1/media/" + id, secret: secretBeta}); got.status != 404 {
		t.Fatalf("another tenant read the file: %d", got.status)
	}

	// A send names the upload; its type and name come from it.
	r := e.do(send(`{"channel":"whatsapp","to":"` + phone + `","media":{"id":"` + id + `","caption":"your invoice"}}`))
	if r.status != 202 {
		t.Fatalf("send with media.id: %d %s", r.status, r.raw)
	}
	stored := e.intake.stored()
	m := stored[len(stored)-1].Content.Media
	if m.ID != id || m.MIMEType != "application/pdf" || m.Filename != "invoice.pdf" || m.URL != "" {
		t.Fatalf("stored media %+v", m)
	}

	// A misspelt parameter is an error, not a delete that ignores it.
	if got := e.do(req{method: "DELETE", path: "/v1/media/" + id + "?forcee=true", secret: secretAcme}); got.status != 400 ||
		got.errorField("code") != gateway.EUnknownField || got.errorField("field") != "forcee" {
		t.Fatalf("delete with an unknown parameter: %d %s", got.status, got.raw)
	}
	if got := e.do(req{method: "GET", path: "/v1/media/" + id, secret: secretAcme}); got.status != 200 {
		t.Fatalf("the refused delete deleted: %d", got.status)
	}
	if got := e.do(req{method: "DELETE", path: "/v1/media/" + id, secret: secretBeta}); got.status != 404 {
		t.Fatalf("another tenant deleted the file: %d", got.status)
	}
	if got := e.do(req{method: "DELETE", path: "/v1/media/" + id, secret: secretAcme}); got.status != 204 {
		t.Fatalf("delete: %d %s", got.status, got.raw)
	}
}

func TestMediaBadInput(t *testing.T) {
	media := &fakeMedia{files: map[string]gateway.MediaFile{}, data: map[string][]byte{}}
	e := newEnv(t, withMedia(media))
	other := e.do(upload(secretBeta, "image/png", "/v1/media", "\x89PNG\r\n\x1a\n"))
	if other.status != 201 {
		t.Fatalf("beta upload: %d %s", other.status, other.raw)
	}
	betaFile := other.body["id"].(string)
	noFile, noFileCT := multipartBody(t, "attachment", "a.pdf", "application/pdf", []byte("%PDF"))
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		field  string
	}{
		{"empty upload", upload(secretAcme, "application/pdf", "/v1/media", ""), 400, gateway.EMissingField, "body"},
		{"too large", upload(secretAcme, "application/pdf", "/v1/media", strings.Repeat("x", testMaxMedia+1)), 413, gateway.EBodyTooLarge, ""},
		{"type not accepted", upload(secretAcme, "application/x-msdownload", "/v1/media", "MZ..."), 400, gateway.EInvalidField, "Content-Type"},
		{"file name with a path", upload(secretAcme, "application/pdf", "/v1/media?filename=../../etc/passwd", "%PDF"), 400, gateway.EInvalidField, "filename"},
		{"multipart without a file part", upload(secretAcme, noFileCT, "/v1/media", noFile), 400, gateway.EMissingField, "file"},
		{"no API key", req{method: "POST", path: "/v1/media", body: "%PDF"}, 401, "unauthorized", ""},
		{"url and id", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"url":"https://x.test/a.pdf","id":"med_1"}}`), 400, gateway.EInvalidField, "media.id"},
		{"not a media id", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"id":"file_1"}}`), 400, gateway.EInvalidField, "media.id"},
		{"unknown media id", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"id":"med_nope"}}`), 400, gateway.EInvalidField, "media.id"},
		{"another tenant's file", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"id":"` + betaFile + `"}}`), 400, gateway.EInvalidField, "media.id"},
		{"upload on teams", send(`{"channel":"teams","to":"teams:user:00000000-0000-0000-0000-000000000001","media":{"id":"` + betaFile + `"}}`), 400, gateway.EInvalidField, "media.id"},
		{"neither url nor id", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"caption":"x"}}`), 400, gateway.EMissingField, "media.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.intake.stored())
			r := e.do(tt.r)
			if r.status != tt.status || r.errorField("code") != tt.code || r.errorField("field") != tt.field {
				t.Fatalf("got %d %s, want %d %s field %q", r.status, r.raw, tt.status, tt.code, tt.field)
			}
			if len(e.intake.stored()) != before {
				t.Fatal("a bad request was accepted")
			}
		})
	}
}
