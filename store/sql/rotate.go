package sql

import (
	"context"

	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// rotateBatch is how many tenant keys one rotation step rewraps.
const rotateBatch = 100

// RotateTenantKeys rewraps every tenant key that is not wrapped by kr's primary master key
// under it, in batches, online: the tenant keys themselves (and so every data key and
// ciphertext under them) do not change, so traffic flows on, and each swap is a compare-and-set,
// so a concurrent rotation or key creation is never overwritten. It returns how many keys it
// rewrapped. Every replica must have the new primary among its master keys before it runs.
func (db *DB) RotateTenantKeys(ctx context.Context, kr *crypt.Keyring) (int, error) {
	primary := kr.PrimaryKeyID()
	total := 0
	after := ""
	for {
		type row struct {
			tenant string
			wk     crypt.WrappedKey
		}
		rows, err := db.vault.db.QueryContext(ctx, db.vault.q(`SELECT tenant, key_id, wrapped FROM vault_tenant_keys
			WHERE key_id <> ? AND tenant > ? ORDER BY tenant LIMIT ?`), primary, after, rotateBatch)
		if err != nil {
			return total, dbErr("rotate: list tenant keys", err)
		}
		var batch []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.tenant, &r.wk.KeyID, &r.wk.Wrapped); err != nil {
				rows.Close()
				return total, dbErr("rotate: list tenant keys", err)
			}
			batch = append(batch, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, dbErr("rotate: list tenant keys", err)
		}
		if len(batch) == 0 {
			return total, nil
		}
		for _, r := range batch {
			nk, changed, err := kr.RewrapTenantKey(r.tenant, r.wk)
			if err != nil {
				return total, err
			}
			if !changed {
				continue
			}
			res, err := db.vault.db.ExecContext(ctx, db.vault.q(`UPDATE vault_tenant_keys SET key_id = ?, wrapped = ?, updated_at = ?
				WHERE tenant = ? AND key_id = ? AND wrapped = ?`), nk.KeyID, nk.Wrapped, micros(db.now()), r.tenant, r.wk.KeyID, r.wk.Wrapped)
			if err != nil {
				return total, dbErr("rotate: rewrap tenant key", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				total++
			}
		}
		after = batch[len(batch)-1].tenant
	}
}

// TenantKeysUnder counts the tenant keys wrapped by master key id: a master key can be retired
// only when none is.
func (db *DB) TenantKeysUnder(ctx context.Context, id string) (int64, error) {
	var n int64
	if err := db.vault.db.QueryRowContext(ctx, db.vault.q("SELECT COUNT(*) FROM vault_tenant_keys WHERE key_id = ?"), id).Scan(&n); err != nil {
		return 0, dbErr("count tenant keys", err)
	}
	return n, nil
}
