package dashboard

import (
	"io"
	"net/http"

	"rsc.io/qr"
)

// maxQRPayload bounds what /ui/qr encodes; WhatsApp's link codes are a few hundred bytes.
const maxQRPayload = 2 << 10

// qrImage is POST /ui/qr: the body (a link code from the link stream) as a PNG QR code, so the
// page shows the code to scan without a script library. Signed-in sessions with their CSRF token
// only: it is no public QR service.
func (d *Dashboard) qrImage(w http.ResponseWriter, r *http.Request) {
	_, ss, ok := d.current(r)
	if !ok {
		writeProblem(w, http.StatusUnauthorized, "unauthorized", "sign in again: the session ended")
		return
	}
	if !ss.validCSRF(r.Header.Get(csrfHeader)) {
		writeProblem(w, http.StatusForbidden, "csrf_failed", "invalid or missing CSRF token: reload the page")
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxQRPayload))
	if err != nil || len(payload) == 0 {
		writeProblem(w, http.StatusBadRequest, "invalid_field", "the body must be a link code of at most 2 KiB")
		return
	}
	code, err := qr.Encode(string(payload), qr.M)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid_field", "the link code cannot be drawn as a QR code")
		return
	}
	code.Scale = 6
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(code.PNG())
}
