package gateway

import (
	"strings"
	"time"
)

// MediaFile is an attachment uploaded through the API (POST /v1/media) and sent by naming its id
// in a message's media. Its bytes and file name are encrypted at rest; it expires after a while,
// like the media of WhatsApp's own API, because it is a staging area, not an archive.
type MediaFile struct {
	ID        string    `json:"id"` // med_…
	Tenant    string    `json:"-"`
	MIMEType  string    `json:"mime_type"`
	Filename  string    `json:"filename,omitempty"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// NewMediaID returns a new media id such as med_01J9Z….
func NewMediaID() string { return NewID("med") }

// DefaultMediaTypes returns the attachment types accepted unless configured otherwise: what
// WhatsApp and Teams show inline or as documents. A "type/*" entry admits the whole family.
func DefaultMediaTypes() []string {
	return []string{"image/*", "video/*", "audio/*", "application/pdf",
		"application/msword", "application/vnd.openxmlformats-officedocument.*",
		"application/vnd.ms-excel", "text/plain", "text/csv"}
}

// MediaTypeAllowed reports whether mimeType is one of allowed (exact, or a "type/*" family).
func MediaTypeAllowed(allowed []string, mimeType string) bool {
	for _, t := range allowed {
		if t == mimeType || strings.HasSuffix(t, "*") && strings.HasPrefix(mimeType, strings.TrimSuffix(t, "*")) {
			return true
		}
	}
	return false
}
