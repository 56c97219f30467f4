package wastore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	_ "modernc.org/sqlite"

	"github.com/switchboard-gateway/switchboard/store/crypt/crypttest"
)

// newTestSealer is the real keyring over an in-memory key store with a random master key.
func newTestSealer(t testing.TB) Sealer {
	return KeyringSealer(crypttest.NewKeyring(t))
}

// engine is one database to run the suite on.
type engine struct {
	name    string
	dialect Dialect
	open    func(t *testing.T) *sql.DB
	dir     string // SQLite: the directory whose files are grepped
}

// container opens the engine's database, migrated and closed when the test ends, and a container
// for acme/sales on it.
func (e engine) container(t *testing.T) (*sql.DB, *Container) {
	t.Helper()
	db := e.open(t)
	t.Cleanup(func() { db.Close() })
	if err := Migrate(context.Background(), db, e.dialect); err != nil {
		t.Fatal(err)
	}
	c, err := New(db, e.dialect, newTestSealer(t), "acme", "sales", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db, c
}

func engines(t *testing.T) []engine {
	dir := t.TempDir()
	path := filepath.Join(dir, "wa.db")
	out := []engine{{
		name: "sqlite", dialect: SQLite, dir: dir,
		open: func(t *testing.T) *sql.DB {
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
			if err != nil {
				t.Fatal(err)
			}
			// As store/sql's SQL() on SQLite: one writer connection, so a query that escaped a
			// decryption transaction would deadlock the test instead of passing by luck.
			db.SetMaxOpenConns(1)
			return db
		},
	}}
	if dsn := os.Getenv("SWITCHBOARD_TEST_POSTGRES_DSN"); dsn != "" {
		schemaName := fmt.Sprintf("wastore_test_%d", time.Now().UnixNano())
		admin, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec("CREATE SCHEMA " + schemaName); err != nil {
			t.Fatalf("create schema: %v", err)
		}
		t.Cleanup(func() {
			_, _ = admin.Exec("DROP SCHEMA " + schemaName + " CASCADE")
			admin.Close()
		})
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
			dsn += sep + "search_path=" + schemaName
		} else {
			dsn += " search_path=" + schemaName
		}
		out = append(out, engine{name: "postgres", dialect: Postgres, open: func(t *testing.T) *sql.DB {
			db, err := sql.Open("pgx", dsn)
			if err != nil {
				t.Fatal(err)
			}
			return db
		}})
	}
	return out
}

func rnd(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// fixture is every value the test stores, to read back and to look for in the files.
type fixture struct {
	dev                               *store.Device
	ourJID, ourLID                    types.JID
	peerPN, peerLID, group            types.JID
	peerAddr, peerAddr2               string
	identity                          [32]byte
	session, session2                 []byte
	senderKey                         []byte
	syncKeyID, syncKeyData, syncKeyFP []byte
	stateHash                         [128]byte
	indexMAC, valueMAC                []byte
	msgSecret                         []byte
	privacyToken                      []byte
	bufferHash                        [32]byte
	bufferPlain                       []byte
	pushName, fullName                string
	preKeys                           []*keys.PreKey
}

func newFixture() *fixture {
	f := &fixture{
		ourJID:       types.JID{User: "4915112340001", Device: 7, Server: types.DefaultUserServer},
		ourLID:       types.JID{User: "201234500001", Device: 7, Server: types.HiddenUserServer},
		peerPN:       types.JID{User: "4915198760002", Server: types.DefaultUserServer},
		peerLID:      types.JID{User: "209876500002", Server: types.HiddenUserServer},
		group:        types.JID{User: "120363000000000042", Server: types.GroupServer},
		session:      append([]byte("SESSIONBLOB-"), rnd(64)...),
		session2:     append([]byte("SESSIONBLOB2-"), rnd(64)...),
		senderKey:    append([]byte("SENDERKEY-"), rnd(48)...),
		syncKeyID:    rnd(6),
		syncKeyData:  rnd(32),
		syncKeyFP:    rnd(20),
		indexMAC:     rnd(32),
		valueMAC:     rnd(32),
		msgSecret:    rnd(32),
		privacyToken: rnd(24),
		bufferPlain:  []byte("Buffered plaintext: the invoice is attached"),
		pushName:     "Zaphod Beeblebrox",
		fullName:     "Arthur Philip Dent",
	}
	f.peerAddr = f.peerPN.SignalAddressUser() + ":0"
	f.peerAddr2 = f.peerPN.SignalAddressUser() + ":3"
	copy(f.identity[:], rnd(32))
	copy(f.stateHash[:], rnd(128))
	copy(f.bufferHash[:], rnd(32))
	return f
}

func (f *fixture) fill(t *testing.T, ctx context.Context, c *Container) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dev := c.NewDevice()
	dev.ID = &f.ourJID
	dev.LID = f.ourLID
	dev.Account = &waAdv.ADVSignedDeviceIdentity{Details: rnd(40), AccountSignature: rnd(64), AccountSignatureKey: rnd(32), DeviceSignature: rnd(64)}
	dev.Platform, dev.PushName, dev.BusinessName = "smba", "Acme Sales", "Acme GmbH"
	must(dev.Save(ctx))
	f.dev = dev

	must(c.PutIdentity(ctx, f.peerAddr, f.identity))
	must(c.PutSession(ctx, f.peerAddr, f.session))
	must(c.PutManySessions(ctx, map[string][]byte{f.peerAddr2: f.session2}))
	pks, err := c.GetOrGenPreKeys(ctx, 5)
	must(err)
	must(c.MarkPreKeysAsUploaded(ctx, pks[len(pks)-1].KeyID))
	one, err := c.GenOnePreKey(ctx)
	must(err)
	f.preKeys = append(pks, one)
	must(c.PutSenderKey(ctx, f.group.String(), f.peerAddr, f.senderKey))
	must(c.PutAppStateSyncKey(ctx, f.syncKeyID, store.AppStateSyncKey{Data: f.syncKeyData, Fingerprint: f.syncKeyFP, Timestamp: 1700000000}))
	must(c.PutAppStateVersion(ctx, "regular_high", 42, f.stateHash))
	must(c.PutAppStateMutationMACs(ctx, "regular_high", 42, []store.AppStateMutationMAC{{IndexMAC: f.indexMAC, ValueMAC: f.valueMAC}}))
	_, _, err = c.PutPushName(ctx, f.peerPN, f.pushName)
	must(err)
	must(c.PutContactName(ctx, f.peerPN, "Arthur", f.fullName))
	must(c.PutPinned(ctx, f.group, true))
	must(c.LIDs().PutLIDMapping(ctx, f.peerLID, f.peerPN))
	must(c.PutMessageSecret(ctx, f.group, f.peerPN, "3EB0AAAA", f.msgSecret))
	must(c.PutPrivacyTokens(ctx, store.PrivacyToken{User: f.peerPN, Token: f.privacyToken, Timestamp: time.Unix(1700000100, 0)}))
	must(c.DoDecryptionTxn(ctx, func(ctx context.Context) error {
		// As whatsmeow does: the ratchet step and the buffered plaintext in one transaction.
		if err := c.PutSession(ctx, f.peerAddr, f.session); err != nil {
			return err
		}
		// Lookups that go through the LID map and the prekeys inside the transaction.
		if _, _, err := c.GetMessageSecret(ctx, f.group, f.peerLID, "3EB0AAAA"); err != nil {
			return err
		}
		if _, err := c.GetPreKey(ctx, f.preKeys[0].KeyID); err != nil {
			return err
		}
		if _, err := c.GetPrivacyToken(ctx, f.peerLID); err != nil {
			return err
		}
		return c.PutBufferedEvent(ctx, f.bufferHash, f.bufferPlain, time.Unix(1700000200, 0))
	}))
}

func (f *fixture) check(t *testing.T, ctx context.Context, c *Container) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dev, err := c.Device(ctx)
	must(err)
	if dev == nil {
		t.Fatal("device not found after reopen")
	}
	if dev.ID.String() != f.ourJID.String() || dev.LID.String() != f.ourLID.String() {
		t.Errorf("device ids: got %s %s", dev.ID, dev.LID)
	}
	if *dev.NoiseKey.Priv != *f.dev.NoiseKey.Priv || *dev.IdentityKey.Pub != *f.dev.IdentityKey.Pub ||
		*dev.SignedPreKey.Priv != *f.dev.SignedPreKey.Priv || *dev.SignedPreKey.Signature != *f.dev.SignedPreKey.Signature ||
		!bytes.Equal(dev.AdvSecretKey, f.dev.AdvSecretKey) || dev.RegistrationID != f.dev.RegistrationID ||
		!bytes.Equal(dev.Account.AccountSignature, f.dev.Account.AccountSignature) || dev.PushName != "Acme Sales" {
		t.Error("device keys differ after reopen")
	}
	if dev.Sessions == nil || dev.LIDs == nil || dev.EventBuffer == nil || !dev.Initialized {
		t.Error("device stores not initialised")
	}
	if ok, err := c.IsTrustedIdentity(ctx, f.peerAddr, f.identity); err != nil || !ok {
		t.Errorf("identity: %v %v", ok, err)
	}
	if ok, _ := c.IsTrustedIdentity(ctx, f.peerAddr, [32]byte{1}); ok {
		t.Error("a different identity key is trusted")
	}
	if s, err := c.GetSession(ctx, f.peerAddr); err != nil || !bytes.Equal(s, f.session) {
		t.Errorf("session: %v", err)
	}
	many, err := c.GetManySessions(ctx, []string{f.peerAddr, f.peerAddr2, "1:1"})
	must(err)
	if !bytes.Equal(many[f.peerAddr2], f.session2) || many["1:1"] != nil || len(many) != 3 {
		t.Errorf("GetManySessions: %d entries", len(many))
	}
	if has, _ := c.HasSession(ctx, f.peerAddr); !has {
		t.Error("HasSession false")
	}
	for _, pk := range f.preKeys {
		got, err := c.GetPreKey(ctx, pk.KeyID)
		must(err)
		if got == nil || *got.Priv != *pk.Priv {
			t.Errorf("prekey %d differs", pk.KeyID)
		}
	}
	if n, _ := c.UploadedPreKeyCount(ctx); n != 6 {
		t.Errorf("uploaded prekeys = %d, want 6", n)
	}
	if k, err := c.GetSenderKey(ctx, f.group.String(), f.peerAddr); err != nil || !bytes.Equal(k, f.senderKey) {
		t.Errorf("sender key: %v", err)
	}
	sk, err := c.GetAppStateSyncKey(ctx, f.syncKeyID)
	must(err)
	if sk == nil || !bytes.Equal(sk.Data, f.syncKeyData) || !bytes.Equal(sk.Fingerprint, f.syncKeyFP) || sk.Timestamp != 1700000000 {
		t.Error("app state sync key differs")
	}
	if id, _ := c.GetLatestAppStateSyncKeyID(ctx); !bytes.Equal(id, f.syncKeyID) {
		t.Error("latest sync key id differs")
	}
	if v, h, err := c.GetAppStateVersion(ctx, "regular_high"); err != nil || v != 42 || h != f.stateHash {
		t.Errorf("app state version: %d %v", v, err)
	}
	if m, err := c.GetAppStateMutationMAC(ctx, "regular_high", f.indexMAC); err != nil || !bytes.Equal(m, f.valueMAC) {
		t.Errorf("mutation mac: %v", err)
	}
	ci, err := c.GetContact(ctx, f.peerPN)
	must(err)
	if !ci.Found || ci.PushName != f.pushName || ci.FullName != f.fullName {
		t.Errorf("contact: %+v", ci)
	}
	all, err := c.GetAllContacts(ctx)
	must(err)
	if all[f.peerPN].PushName != f.pushName {
		t.Error("GetAllContacts misses the contact")
	}
	if cs, _ := c.GetChatSettings(ctx, f.group); !cs.Found || !cs.Pinned {
		t.Error("chat settings differ")
	}
	if pn, _ := c.LIDs().GetPNForLID(ctx, f.peerLID); pn.User != f.peerPN.User {
		t.Errorf("GetPNForLID = %s", pn)
	}
	if lid, _ := c.LIDs().GetLIDForPN(ctx, f.peerPN); lid.User != f.peerLID.User {
		t.Errorf("GetLIDForPN = %s", lid)
	}
	// The secret was stored under the phone number; the lookup by LID finds it through the map.
	sec, sender, err := c.GetMessageSecret(ctx, f.group, f.peerLID, "3EB0AAAA")
	must(err)
	if !bytes.Equal(sec, f.msgSecret) || sender.User != f.peerPN.User {
		t.Errorf("message secret by LID: sender %s", sender)
	}
	tok, err := c.GetPrivacyToken(ctx, f.peerLID)
	must(err)
	if tok == nil || !bytes.Equal(tok.Token, f.privacyToken) {
		t.Error("privacy token by LID not found")
	}
	buf, err := c.GetBufferedEvent(ctx, f.bufferHash)
	must(err)
	if buf == nil || !bytes.Equal(buf.Plaintext, f.bufferPlain) || buf.ServerTime.Unix() != 1700000200 {
		t.Error("buffered event differs")
	}
}

// secrets lists what must never appear in the database in the clear.
func (f *fixture) secrets() map[string][]byte {
	s := map[string][]byte{
		"noise key": f.dev.NoiseKey.Priv[:], "identity key": f.dev.IdentityKey.Priv[:],
		"signed prekey": f.dev.SignedPreKey.Priv[:], "signed prekey sig": f.dev.SignedPreKey.Signature[:],
		"adv secret": f.dev.AdvSecretKey, "adv account sig": f.dev.Account.AccountSignature,
		"adv details":   f.dev.Account.Details,
		"peer identity": f.identity[:], "session": f.session, "session2": f.session2, "sender key": f.senderKey,
		"sync key": f.syncKeyData, "sync fingerprint": f.syncKeyFP, "state hash": f.stateHash[:],
		"index mac": f.indexMAC, "value mac": f.valueMAC, "message secret": f.msgSecret,
		"privacy token": f.privacyToken, "buffered plaintext": f.bufferPlain,
		"push name": []byte(f.pushName), "full name": []byte(f.fullName),
		"our phone": []byte(f.ourJID.User), "our lid": []byte(f.ourLID.User),
		"peer phone": []byte(f.peerPN.User), "peer lid": []byte(f.peerLID.User), "group": []byte(f.group.User),
	}
	for i, pk := range f.preKeys {
		s[fmt.Sprintf("prekey %d", i)] = pk.Priv[:]
	}
	return s
}

// forms returns the ways a secret could sit in a file: raw, hex (lower and upper) and base64.
func forms(b []byte) [][]byte {
	out := [][]byte{b}
	if len(b) >= 8 {
		h := hex.EncodeToString(b)
		out = append(out, []byte(h), []byte(strings.ToUpper(h)), []byte(base64.StdEncoding.EncodeToString(b)))
	}
	// A prefix long enough to be meaningful catches partial copies.
	if len(b) > 16 {
		out = append(out, b[:16])
	}
	return out
}

func assertAbsent(t *testing.T, where string, data []byte, secrets map[string][]byte) {
	t.Helper()
	for name, s := range secrets {
		for _, form := range forms(s) {
			if bytes.Contains(data, form) {
				t.Errorf("%s contains the %s in plaintext (%d bytes form)", where, name, len(form))
			}
		}
	}
}

// dumpTables returns every cell of every wa_ table as bytes.
func dumpTables(t *testing.T, ctx context.Context, db *sql.DB) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, table := range append(deviceTables, "wa_account_state") {
		rows, err := db.QueryContext(ctx, "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				fmt.Fprintf(&buf, "%s\x00", v)
				if b, ok := v.([]byte); ok {
					buf.Write(b)
				}
			}
		}
		rows.Close()
	}
	return buf.Bytes()
}

func TestStoreRoundTripAndNoPlaintext(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			sealer := newTestSealer(t)
			db := e.open(t)
			for i := 0; i < 2; i++ { // Migrate is idempotent
				if err := Migrate(ctx, db, e.dialect); err != nil {
					t.Fatal(err)
				}
			}
			c, err := New(db, e.dialect, sealer, "acme", "sales", Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			if d, err := c.Device(ctx); err != nil || d != nil {
				t.Fatalf("fresh account has a device: %v %v", d, err)
			}
			f := newFixture()
			f.fill(t, ctx, c)
			f.check(t, ctx, c)
			db.Close()

			// Reopen: a new pool and a new container read everything back.
			db = e.open(t)
			defer db.Close()
			c2, err := New(db, e.dialect, sealer, "acme", "sales", Options{})
			if err != nil {
				t.Fatal(err)
			}
			f.check(t, ctx, c2)

			// Another account in the same database sees nothing of this one.
			other, _ := New(db, e.dialect, sealer, "acme", "support", Options{})
			if d, _ := other.Device(ctx); d != nil {
				t.Error("another account sees the device")
			}
			if s, _ := other.GetSession(ctx, f.peerAddr); s != nil {
				t.Error("another account sees the session")
			}

			secrets := f.secrets()
			assertAbsent(t, e.name+" tables", dumpTables(t, ctx, db), secrets)
			if e.dir != "" {
				db.Close()
				files, _ := filepath.Glob(filepath.Join(e.dir, "*"))
				if len(files) == 0 {
					t.Fatal("no database files")
				}
				for _, p := range files {
					data, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					assertAbsent(t, filepath.Base(p), data, secrets)
				}
				// Guard the grep itself: the files do hold the tenant and account names.
				data, _ := os.ReadFile(filepath.Join(e.dir, "wa.db"))
				if !bytes.Contains(data, []byte("sales")) {
					t.Error("sanity: the account name is not in the database file; the grep looks at the wrong file")
				}
			}
		})
	}
}

func TestCiphertextBoundToRow(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			_, c := e.container(t)
			if err := c.PutSession(ctx, "111:0", []byte("one")); err != nil {
				t.Fatal(err)
			}
			if err := c.PutSession(ctx, "222:0", []byte("two")); err != nil {
				t.Fatal(err)
			}
			// Copy the first row's sealed session over the second's.
			var sealed []byte
			ix1, _ := c.ix(ctx, "addr", "111:0")
			ix2, _ := c.ix(ctx, "addr", "222:0")
			if err := c.queryRow(ctx, `SELECT session FROM wa_session WHERE addr_ix=$1`, ix1).Scan(&sealed); err != nil {
				t.Fatal(err)
			}
			if _, err := c.exec(ctx, `UPDATE wa_session SET session=$1 WHERE addr_ix=$2`, sealed, ix2); err != nil {
				t.Fatal(err)
			}
			if _, err := c.GetSession(ctx, "222:0"); err == nil {
				t.Error("a ciphertext moved to another row opened")
			}
			if s, err := c.GetSession(ctx, "111:0"); err != nil || string(s) != "one" {
				t.Errorf("the original row: %q %v", s, err)
			}
		})
	}
}

func TestDecryptionTxnRollsBack(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			_, c := e.container(t)
			if err := c.PutSession(ctx, "111:0", []byte("before")); err != nil {
				t.Fatal(err)
			}
			hash := sha256.Sum256([]byte("ciphertext"))
			boom := errors.New("handler failed")
			err := c.DoDecryptionTxn(ctx, func(ctx context.Context) error {
				if err := c.PutSession(ctx, "111:0", []byte("after")); err != nil {
					return err
				}
				if err := c.PutBufferedEvent(ctx, hash, []byte("plain"), time.Now()); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v", err)
			}
			if s, _ := c.GetSession(ctx, "111:0"); string(s) != "before" {
				t.Errorf("session after rollback = %q", s)
			}
			if b, _ := c.GetBufferedEvent(ctx, hash); b != nil {
				t.Error("buffered event survived the rollback")
			}
			// Committed, then cleared: the hash stays (so a redelivery is recognised), the plaintext goes.
			if err := c.DoDecryptionTxn(ctx, func(ctx context.Context) error {
				return c.PutBufferedEvent(ctx, hash, []byte("plain"), time.Now())
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.ClearBufferedEventPlaintext(ctx, hash); err != nil {
				t.Fatal(err)
			}
			b, err := c.GetBufferedEvent(ctx, hash)
			if err != nil || b == nil || b.Plaintext != nil {
				t.Errorf("cleared buffered event: %+v %v", b, err)
			}
		})
	}
}

func TestMigratePNToLIDAndDeleteAll(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			db, c := e.container(t)
			pn := types.JID{User: "4915100000003", Server: types.DefaultUserServer}
			lid := types.JID{User: "2000000003", Server: types.HiddenUserServer}
			for _, dev := range []string{":0", ":4"} {
				if err := c.PutSession(ctx, pn.User+dev, []byte("s"+dev)); err != nil {
					t.Fatal(err)
				}
				if err := c.PutIdentity(ctx, pn.User+dev, [32]byte{9}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.PutSenderKey(ctx, "g@g.us", pn.User+":4", []byte("sk")); err != nil {
				t.Fatal(err)
			}
			if err := c.MigratePNToLID(ctx, pn, lid); err != nil {
				t.Fatal(err)
			}
			lidUser := lid.SignalAddressUser()
			if s, _ := c.GetSession(ctx, lidUser+":4"); string(s) != "s:4" {
				t.Errorf("migrated session = %q", s)
			}
			if s, _ := c.GetSession(ctx, pn.User+":4"); s != nil {
				t.Error("phone-number session left behind")
			}
			if k, _ := c.GetSenderKey(ctx, "g@g.us", lidUser+":4"); string(k) != "sk" {
				t.Errorf("migrated sender key = %q", k)
			}
			if err := c.DeleteAllSessions(ctx, lidUser); err != nil {
				t.Fatal(err)
			}
			if s, _ := c.GetSession(ctx, lidUser+":0"); s != nil {
				t.Error("DeleteAllSessions left a session")
			}

			// DeleteAll (logout, failed link) leaves no row of the account.
			dev := c.NewDevice()
			j := types.JID{User: "4915100000004", Device: 2, Server: types.DefaultUserServer}
			dev.ID = &j
			dev.Account = &waAdv.ADVSignedDeviceIdentity{}
			if err := dev.Save(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.LIDs().PutLIDMapping(ctx, lid, pn); err != nil {
				t.Fatal(err)
			}
			if err := dev.Delete(ctx); err != nil {
				t.Fatal(err)
			}
			for _, table := range deviceTables {
				var n int
				if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("%s has %d rows after delete", table, n)
				}
			}
			if got, _ := c.LIDs().GetLIDForPN(ctx, pn); !got.IsEmpty() {
				t.Error("LID cache survived the delete")
			}
		})
	}
}

func TestAccountState(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			_, c := e.container(t)
			if _, ok, err := c.LoadState(ctx); ok || err != nil {
				t.Fatalf("fresh state: %v %v", ok, err)
			}
			until := time.UnixMilli(1800000000000)
			if err := c.SaveState(ctx, AccountState{State: "banned", Detail: "101", BannedUntil: until}); err != nil {
				t.Fatal(err)
			}
			s, ok, err := c.LoadState(ctx)
			if err != nil || !ok || s.State != "banned" || !s.BannedUntil.Equal(until) {
				t.Errorf("state: %+v %v %v", s, ok, err)
			}
		})
	}
}
