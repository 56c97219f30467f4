package sql

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
)

func TestMediaFiles(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Microsecond)
		data := bytes.Repeat([]byte("%PDF-1.7 secret invoice body "), 100)
		f := gateway.MediaFile{ID: gateway.NewMediaID(), Tenant: "acme", MIMEType: "application/pdf", Filename: "invoice-4711.pdf",
			ExpiresAt: now.Add(time.Hour)}
		if err := e.db.PutMedia(ctx, f, data); err != nil {
			t.Fatal(err)
		}
		info, err := e.db.MediaInfo(ctx, "acme", f.ID)
		if err != nil || info.MIMEType != f.MIMEType || info.Filename != f.Filename || info.Size != int64(len(data)) || !info.ExpiresAt.Equal(f.ExpiresAt) {
			t.Fatalf("info %+v, %v", info, err)
		}
		got, gotData, err := e.db.MediaData(ctx, "acme", f.ID)
		if err != nil || !bytes.Equal(gotData, data) || got.Filename != f.Filename {
			t.Fatalf("data %d bytes, %+v, %v", len(gotData), got, err)
		}
		// Another tenant sees nothing, and cannot delete it.
		if _, err := e.db.MediaInfo(ctx, "beta", f.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta read acme's media: %v", err)
		}
		if err := e.db.DeleteMedia(ctx, "beta", f.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta deleted acme's media: %v", err)
		}
		// Neither the bytes nor the file name are on disk in plaintext.
		if e.dir != "" {
			for _, needle := range []string{"secret invoice body", "invoice-4711"} {
				if paths, _ := gatewaytest.FilesHolding(t, e.dir, []byte(needle)); len(paths) > 0 {
					t.Fatalf("%v hold %q in plaintext", paths, needle)
				}
			}
		}
		// Expired files are gone for readers at once, and swept from the table.
		old := gateway.MediaFile{ID: gateway.NewMediaID(), Tenant: "acme", MIMEType: "image/png", ExpiresAt: now.Add(-time.Second)}
		if err := e.db.PutMedia(ctx, old, []byte("png")); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.MediaInfo(ctx, "acme", old.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("expired media read: %v", err)
		}
		if n, err := e.db.DeleteExpiredMedia(ctx, now, 100); err != nil || n != 1 {
			t.Fatalf("swept %d, %v; want 1", n, err)
		}
		if err := e.db.DeleteMedia(ctx, "acme", f.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.MediaInfo(ctx, "acme", f.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("deleted media read: %v", err)
		}
	})
}
