package store

import (
	"context"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// MediaFiles keeps uploaded attachments, encrypted, until they expire.
type MediaFiles interface {
	// PutMedia stores f (ID, Tenant, MIMEType, Filename, Size, ExpiresAt set) with its bytes.
	PutMedia(ctx context.Context, f gateway.MediaFile, data []byte) error
	// MediaInfo returns a file's description without its bytes; ENotFound when the tenant has no
	// such file or it expired.
	MediaInfo(ctx context.Context, tenant, id string) (gateway.MediaFile, error)
	// MediaData returns a file with its bytes, decrypted; ENotFound as MediaInfo.
	MediaData(ctx context.Context, tenant, id string) (gateway.MediaFile, []byte, error)
	// DeleteMedia removes a file; ENotFound when the tenant has no such file.
	DeleteMedia(ctx context.Context, tenant, id string) error
	// DeleteExpiredMedia removes up to limit files that expired before now and reports how many.
	DeleteExpiredMedia(ctx context.Context, now time.Time, limit int) (int, error)
}
