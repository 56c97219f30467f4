package credstore_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/credstore"
)

// gcmSealer is a stand-in keyring: AES-256-GCM with the associated data tenant|table|row|column,
// as the real keyring binds it.
type gcmSealer struct{ aead cipher.AEAD }

func newSealer(t *testing.T) *gcmSealer {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &gcmSealer{aead: a}
}

func adBytes(tenant string, ad credstore.AD) []byte {
	return []byte(tenant + "|" + ad.Table + "|" + ad.Row + "|" + ad.Column)
}

func (s *gcmSealer) SealTenant(_ context.Context, tenant string, ad credstore.AD, pt []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, pt, adBytes(tenant, ad)), nil
}

func (s *gcmSealer) OpenTenant(_ context.Context, tenant string, ad credstore.AD, ct []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(ct) < n {
		return nil, errors.New("short ciphertext")
	}
	return s.aead.Open(nil, ct[:n], ct[n:], adBytes(tenant, ad))
}

type engine struct {
	name    string
	dialect credstore.Dialect
	open    func(t *testing.T) (*sql.DB, string) // db and, for SQLite, the file path
}

func engines(t *testing.T) []engine {
	es := []engine{{
		name: "sqlite", dialect: credstore.SQLite,
		open: func(t *testing.T) (*sql.DB, string) {
			path := filepath.Join(t.TempDir(), "sb.db")
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db, path
		},
	}}
	if dsn := os.Getenv("SWITCHBOARD_TEST_POSTGRES_DSN"); dsn != "" {
		es = append(es, engine{
			name: "postgres", dialect: credstore.Postgres,
			open: func(t *testing.T) (*sql.DB, string) {
				db, err := sql.Open("pgx", dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					db.Exec(`DELETE FROM credentials WHERE tenant LIKE 'credstore-test-%'`)
					db.Close()
				})
				return db, ""
			},
		})
	}
	return es
}

func newStore(t *testing.T, e engine) (*credstore.Store, *sql.DB, string) {
	t.Helper()
	db, path := e.open(t)
	s, err := credstore.New(db, e.dialect, newSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ { // idempotent
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrate %d: %v", i, err)
		}
	}
	return s, db, path
}

func TestStore(t *testing.T) {
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			ctx := context.Background()
			s, db, path := newStore(t, e)
			tenant := "credstore-test-" + gateway.NewID("t")
			k := credstore.Key{Tenant: tenant, Channel: "teams", Account: "ops", Name: "msal_cache"}

			if _, err := s.Get(ctx, k); gateway.ErrorCode(err) != gateway.ENotFound {
				t.Fatalf("get absent: %v, want not_found", err)
			}
			secret := []byte(`{"RefreshToken":"very-secret-refresh-token-4711"}`)
			if err := s.Put(ctx, k, secret); err != nil {
				t.Fatal(err)
			}
			got, v1, err := s.GetVersion(ctx, k)
			if err != nil || !bytes.Equal(got, secret) || v1 != 1 {
				t.Fatalf("get = %q, %d, %v", got, v1, err)
			}
			if err := s.Put(ctx, k, []byte("second")); err != nil {
				t.Fatal(err)
			}
			got, v2, err := s.GetVersion(ctx, k)
			if err != nil || string(got) != "second" || v2 != 2 {
				t.Fatalf("after overwrite: %q, %d, %v", got, v2, err)
			}

			// Compare-and-swap.
			if err := s.PutIfVersion(ctx, k, v1, []byte("stale")); gateway.ErrorCode(err) != gateway.EConflict {
				t.Fatalf("stale CAS: %v, want conflict", err)
			}
			if err := s.PutIfVersion(ctx, k, v2, []byte("third")); err != nil {
				t.Fatalf("CAS: %v", err)
			}
			k2 := credstore.Key{Tenant: tenant, Channel: "teams", Account: "ops", Name: "client_secret"}
			if err := s.PutIfVersion(ctx, k2, 0, secret); err != nil {
				t.Fatalf("CAS create: %v", err)
			}
			if err := s.PutIfVersion(ctx, k2, 0, secret); gateway.ErrorCode(err) != gateway.EConflict {
				t.Fatalf("CAS create twice: %v, want conflict", err)
			}

			// A ciphertext moved to another row does not open.
			if _, err := db.ExecContext(ctx, rebind(e.dialect, `UPDATE credentials SET value = (SELECT value FROM credentials WHERE tenant = ? AND name = 'client_secret') WHERE tenant = ? AND name = 'msal_cache'`), tenant, tenant); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, k); err == nil {
				t.Fatal("a ciphertext moved to another row opened")
			}

			names, err := s.Names(ctx, tenant, "teams", "ops")
			if err != nil || len(names) != 2 || names[0] != "client_secret" || names[1] != "msal_cache" {
				t.Fatalf("names = %v, %v", names, err)
			}

			if path != "" {
				assertNotInFiles(t, path, "very-secret-refresh-token-4711")
			}

			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, k); gateway.ErrorCode(err) != gateway.ENotFound {
				t.Fatalf("after delete: %v", err)
			}
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("delete absent: %v", err)
			}
			if n, err := s.DeleteTenant(ctx, tenant); err != nil || n != 1 {
				t.Fatalf("delete tenant = %d, %v", n, err)
			}
		})
	}
}

func TestInvalidKeys(t *testing.T) {
	s, _, _ := newStore(t, engines(t)[0])
	ctx := context.Background()
	cases := []struct {
		name  string
		key   credstore.Key
		field string
		code  string
	}{
		{"no tenant", credstore.Key{Channel: "teams", Account: "a", Name: "n"}, "tenant", gateway.EMissingField},
		{"no name", credstore.Key{Tenant: "t", Channel: "teams", Account: "a"}, "name", gateway.EMissingField},
		{"slash", credstore.Key{Tenant: "t", Channel: "teams", Account: "a/b", Name: "n"}, "account", gateway.EInvalidField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Put(ctx, c.key, []byte("x"))
			if gateway.ErrorCode(err) != c.code || gateway.ErrorField(err) != c.field {
				t.Fatalf("put: %v (code %s field %s), want %s on %s", err, gateway.ErrorCode(err), gateway.ErrorField(err), c.code, c.field)
			}
			if _, err := s.Get(ctx, c.key); gateway.ErrorCode(err) != c.code {
				t.Fatalf("get: %v", err)
			}
		})
	}
}

func TestParseDialect(t *testing.T) {
	for in, want := range map[string]credstore.Dialect{"sqlite": credstore.SQLite, "SQLite3": credstore.SQLite, "postgres": credstore.Postgres, "pgx": credstore.Postgres} {
		if got, err := credstore.ParseDialect(in); err != nil || got != want {
			t.Errorf("ParseDialect(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := credstore.ParseDialect("mysql"); gateway.ErrorField(err) != "store.driver" {
		t.Errorf("mysql: %v", err)
	}
}

func rebind(d credstore.Dialect, q string) string {
	if d != credstore.Postgres {
		return q
	}
	out, n := []byte{}, 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = append(out, '$', byte('0'+n))
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}

// assertNotInFiles checks the database file and its WAL for a plaintext.
func assertNotInFiles(t *testing.T, path, needle string) {
	t.Helper()
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(needle)) {
			t.Fatalf("%s contains %q in plaintext", filepath.Base(p), needle)
		}
	}
}
