package sql

import (
	"context"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// TestErasureJobResumable runs a subject erasure's store steps on both engines, the row deletion
// twice (a job taken over after a crash): the pending messages are recorded with the deletion,
// the report counts once, and finishing drops the pending list and the subject's index.
func TestErasureJobResumable(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		const who = "+4915112345678"
		for range 3 {
			create(t, e.db, newMsg(t, "acme", who, "pending"))
		}
		create(t, e.db, newMsg(t, "acme", "+4915112345679", "another subject"))
		idx, err := e.kr.BlindIndex(ctx, "acme", who)
		if err != nil {
			t.Fatal(err)
		}
		job, err := e.db.CreateErasure(ctx, "acme", idx, "key_1")
		if err != nil {
			t.Fatal(err)
		}
		claimed, subject, ok, err := e.db.ClaimErasure(ctx, 0)
		if err != nil || !ok || claimed.ID != job.ID || subject != idx || claimed.WholeTenant {
			t.Fatalf("claim: %+v %v %v", claimed, ok, err)
		}
		for range 2 {
			if err := e.db.EraseSubjectRows(ctx, "acme", idx, job.ID); err != nil {
				t.Fatal(err)
			}
		}
		pending, err := e.db.ErasurePending(ctx, "acme", job.ID)
		if err != nil || len(pending) != 3 || pending[0].Tenant != "acme" || pending[0].Account != "sales" {
			t.Fatalf("pending: %+v %v", pending, err)
		}
		if err := e.db.FinishErasure(ctx, job.ID); err != nil {
			t.Fatal(err)
		}
		done, err := e.db.Erasure(ctx, "acme", job.ID)
		if err != nil || done.State != store.ErasureDone || done.Report[ReportMessages] != 3 || done.Report[ReportPendingStopped] != 3 {
			t.Fatalf("done: %+v %v", done, err)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM erasure_pending"); n != 0 {
			t.Fatalf("%d pending rows left", n)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM erasures WHERE subject IS NOT NULL"); n != 0 {
			t.Fatal("a finished job keeps the subject's index")
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM messages"); n != 1 {
			t.Fatalf("%d messages left, want the other subject's", n)
		}
	})
}

// TestTenantErasureKeepsRequester: on both engines, a tenant erasure leaves the API key that
// asked for it (to read the report) and the job, and nothing else of the tenant.
func TestTenantErasureKeepsRequester(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		create(t, e.db, newMsg(t, "acme", "+4915112345678", "text"))
		create(t, e.db, newMsg(t, "beta", "+4915112345678", "text"))
		admin, err := e.db.CreateAPIKey(ctx, "acme", "admin", "sbk_0123456789abcdefghijklmnopqrstuv")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.CreateAPIKey(ctx, "acme", "plain", "sbk_1123456789abcdefghijklmnopqrstuv"); err != nil {
			t.Fatal(err)
		}
		if err := e.db.GrantAdmin(ctx, "beta", admin.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("granting another tenant's key: %v", err)
		}
		if err := e.db.GrantAdmin(ctx, "acme", admin.ID); err != nil {
			t.Fatal(err)
		}
		if k, err := e.db.APIKeyBySecret(ctx, "sbk_0123456789abcdefghijklmnopqrstuv"); err != nil || !k.Admin {
			t.Fatalf("admin key: %+v %v", k, err)
		}
		if k, err := e.db.APIKeyBySecret(ctx, "sbk_1123456789abcdefghijklmnopqrstuv"); err != nil || k.Admin {
			t.Fatalf("plain key: %+v %v", k, err)
		}
		job, err := e.db.CreateTenantErasure(ctx, "acme", admin.ID, true)
		if err != nil || !job.WholeTenant || job.State != store.ErasureRunning {
			t.Fatalf("job %+v %v", job, err)
		}
		report, err := e.db.EraseTenant(ctx, "acme", admin.ID)
		if err != nil || report["api_keys"] != 1 || report[ReportMessages] != 1 || report["tenant_keys"] != 1 {
			t.Fatalf("report %v %v", report, err)
		}
		for _, q := range []struct {
			query string
			want  int
		}{
			{"SELECT COUNT(*) FROM api_keys WHERE tenant = 'acme'", 1},
			{"SELECT COUNT(*) FROM erasures WHERE tenant = 'acme'", 1},
			{"SELECT COUNT(*) FROM messages WHERE tenant = 'acme'", 0},
			{"SELECT COUNT(*) FROM messages WHERE tenant = 'beta'", 1},
		} {
			if n := count(t, e.db, q.query); n != q.want {
				t.Errorf("%s: %d, want %d", q.query, n, q.want)
			}
		}
	})
}
