package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

var _ store.MediaFiles = (*DB)(nil)

func mediaAD(id, column string) crypt.AD { return crypt.AD{Table: "media", Row: id, Column: column} }

// PutMedia implements store.MediaFiles.
func (db *DB) PutMedia(ctx context.Context, f gateway.MediaFile, data []byte) error {
	if f.ID == "" || f.Tenant == "" || f.MIMEType == "" || f.ExpiresAt.IsZero() {
		return gateway.Errorf(gateway.EInternal, "store: a media file needs an id, a tenant, a type and an expiry")
	}
	kr, err := db.kr()
	if err != nil {
		return err
	}
	dataCT, err := kr.SealTenant(ctx, f.Tenant, mediaAD(f.ID, "data"), data)
	if err != nil {
		return err
	}
	var nameCT []byte
	if f.Filename != "" {
		if nameCT, err = kr.SealTenant(ctx, f.Tenant, mediaAD(f.ID, "filename"), []byte(f.Filename)); err != nil {
			return err
		}
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = db.now()
	}
	return db.write(ctx, "put media", func(ctx context.Context, tx *wtx) error {
		_, err := tx.exec(ctx, `INSERT INTO media (id, tenant, mime_type, size, filename_ct, data_ct, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, f.ID, f.Tenant, f.MIMEType, int64(len(data)), nullBytes(nameCT), dataCT,
			micros(f.CreatedAt), micros(f.ExpiresAt))
		return err
	})
}

// MediaInfo implements store.MediaFiles.
func (db *DB) MediaInfo(ctx context.Context, tenant, id string) (gateway.MediaFile, error) {
	f, _, err := db.media(ctx, tenant, id, false)
	return f, err
}

// MediaData implements store.MediaFiles.
func (db *DB) MediaData(ctx context.Context, tenant, id string) (gateway.MediaFile, []byte, error) {
	return db.media(ctx, tenant, id, true)
}

func (db *DB) media(ctx context.Context, tenant, id string, withData bool) (gateway.MediaFile, []byte, error) {
	kr, err := db.kr()
	if err != nil {
		return gateway.MediaFile{}, nil, err
	}
	f := gateway.MediaFile{ID: id, Tenant: tenant}
	var nameCT, dataCT []byte
	var created, expires int64
	q := "SELECT mime_type, size, filename_ct, created_at, expires_at, NULL FROM media WHERE tenant = ? AND id = ? AND expires_at > ?"
	if withData {
		q = "SELECT mime_type, size, filename_ct, created_at, expires_at, data_ct FROM media WHERE tenant = ? AND id = ? AND expires_at > ?"
	}
	err = db.readRow(ctx, db.q(q), tenant, id, micros(db.now())).Scan(&f.MIMEType, &f.Size, &nameCT, &created, &expires, &dataCT)
	if errors.Is(err, dbsql.ErrNoRows) {
		return f, nil, gateway.Errorf(gateway.ENotFound, "no media file %s (it may have expired)", id)
	}
	if err != nil {
		return f, nil, dbErr("read media", err)
	}
	f.CreatedAt, f.ExpiresAt = fromMicros(created), fromMicros(expires)
	if nameCT != nil {
		name, err := kr.OpenTenant(ctx, tenant, mediaAD(id, "filename"), nameCT)
		if err != nil {
			return f, nil, err
		}
		f.Filename = string(name)
	}
	if !withData {
		return f, nil, nil
	}
	data, err := kr.OpenTenant(ctx, tenant, mediaAD(id, "data"), dataCT)
	return f, data, err
}

// DeleteMedia implements store.MediaFiles.
func (db *DB) DeleteMedia(ctx context.Context, tenant, id string) error {
	var n int64
	err := db.write(ctx, "delete media", func(ctx context.Context, tx *wtx) error {
		res, err := tx.exec(ctx, "DELETE FROM media WHERE tenant = ? AND id = ?", tenant, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err == nil && n == 0 {
		return gateway.Errorf(gateway.ENotFound, "no media file %s", id)
	}
	return err
}

// DeleteExpiredMedia implements store.MediaFiles.
func (db *DB) DeleteExpiredMedia(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int64
	err := db.write(ctx, "delete expired media", func(ctx context.Context, tx *wtx) error {
		res, err := tx.exec(ctx, `DELETE FROM media WHERE id IN (SELECT id FROM media WHERE expires_at <= ? LIMIT ?)`, micros(now), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}
