package sql

import (
	"context"
	"fmt"
	"sort"
)

// keptOnTenantErasure are the tables a tenant erasure leaves: usage counts (billing), the audit
// log and the erasure jobs (counts per kind), none of which holds content or identifiers.
var keptOnTenantErasure = map[string]bool{"usage_daily": true, "audit_log": true, "erasures": true}

// tenantTables lists the data database's tables with a tenant column: this store's and those
// other packages keep in the same database (channel credentials, the WhatsApp device store …),
// so an erasure covers tables added later without a list to keep up to date.
func (db *DB) tenantTables(ctx context.Context) ([]string, error) {
	query := `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
		WHERE m.type = 'table' AND c.name = 'tenant'`
	if db.pg {
		query = `SELECT table_name FROM information_schema.columns
			WHERE table_schema = current_schema() AND column_name = 'tenant'`
	}
	rows, err := db.writer.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		if !keptOnTenantErasure[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, rows.Err()
}

// EraseTenant erases a whole tenant: its key and every data key under it are destroyed first
// (crypto-shredding: nothing of the tenant opens any more, wherever a copy is), then every row
// of the tenant in every table with a tenant column, messages in chunks (counted into the usage
// counts first), then the tenant itself. Usage counts and the audit log stay. It returns the rows
// removed per table. keepKey, when set, is an API key of the tenant left in place (only its hash),
// so the admin who asked for the erasure by API can read the job's report; revoke it afterwards.
// Stop serving the tenant (remove it from the config) before or right after erasing it: a running
// gateway would otherwise recreate it on its next message.
func (db *DB) EraseTenant(ctx context.Context, tenant, keepKey string) (map[string]int64, error) {
	report := map[string]int64{}
	tx, err := db.vault.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbErr("erase tenant keys", err)
	}
	defer tx.Rollback()
	for _, q := range []struct{ kind, query string }{
		{ReportKeys, "DELETE FROM vault_subject_keys WHERE tenant = ?"},
		{"tenant_keys", "DELETE FROM vault_tenant_keys WHERE tenant = ?"},
	} {
		res, err := tx.ExecContext(ctx, db.vault.q(q.query), tenant)
		if err != nil {
			return nil, dbErr("erase tenant keys", err)
		}
		n, _ := res.RowsAffected()
		report[q.kind] += n
	}
	if err := tx.Commit(); err != nil {
		return nil, dbErr("erase tenant keys", err)
	}
	if k := db.keyring.Load(); k != nil {
		k.Forget(tenant, "")
	}

	for {
		var msgs, events int64
		err := db.write(ctx, "erase tenant messages", func(ctx context.Context, tx *wtx) error {
			msgs, events = 0, 0
			ids, err := messageIDs(ctx, tx, db.q("SELECT id FROM messages WHERE tenant = ? LIMIT ?"), tenant, eraseChunk)
			if err != nil || len(ids) == 0 {
				return err
			}
			msgs, events, err = deleteMessages(ctx, tx, ids)
			return err
		})
		if err != nil {
			return report, err
		}
		report[ReportMessages] += msgs
		report[ReportStatusEvents] += events
		if msgs == 0 {
			break
		}
	}
	tables, err := db.tenantTables(ctx)
	if err != nil {
		return report, dbErr("erase tenant: list tables", err)
	}
	var counts map[string]int64
	err = db.write(ctx, "erase tenant", func(ctx context.Context, tx *wtx) error {
		counts = map[string]int64{}
		for _, t := range tables {
			query, args := fmt.Sprintf("DELETE FROM %q WHERE tenant = ?", t), []any{tenant}
			if t == "api_keys" {
				query, args = query+" AND id <> ?", append(args, keepKey)
			}
			res, err := tx.exec(ctx, query, args...)
			if err != nil {
				return err
			}
			counts[t], _ = res.RowsAffected()
		}
		res, err := tx.exec(ctx, "DELETE FROM tenants WHERE id = ?", tenant)
		if err != nil {
			return err
		}
		counts["tenants"], _ = res.RowsAffected()
		return nil
	})
	for k, v := range counts {
		if v > 0 {
			report[k] += v
		}
	}
	return report, err
}
