package wastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// signalName is the name part of a Signal address "name:device".
func signalName(address string) string {
	if i := strings.LastIndexByte(address, ':'); i >= 0 {
		return address[:i]
	}
	return address
}

// ---- IdentityStore ----

func (c *Container) PutIdentity(ctx context.Context, address string, key [32]byte) error {
	return c.putAddressed(ctx, "wa_identity", "identity", address, key[:])
}

func (c *Container) DeleteAllIdentities(ctx context.Context, phone string) error {
	return c.deleteByName(ctx, "wa_identity", phone)
}

func (c *Container) DeleteIdentity(ctx context.Context, address string) error {
	return c.deleteAddressed(ctx, "wa_identity", address)
}

func (c *Container) IsTrustedIdentity(ctx context.Context, address string, key [32]byte) (bool, error) {
	existing, err := c.getAddressed(ctx, "wa_identity", "identity", address)
	if err != nil {
		return false, err
	} else if existing == nil {
		// Trust on first use, as whatsmeow's own store does: it is saved right after.
		return true, nil
	} else if len(existing) != 32 {
		return false, errors.New("wastore: stored identity key has the wrong length")
	}
	return [32]byte(existing) == key, nil
}

// ---- SessionStore ----

func (c *Container) GetSession(ctx context.Context, address string) ([]byte, error) {
	return c.getAddressed(ctx, "wa_session", "session", address)
}

func (c *Container) HasSession(ctx context.Context, address string) (bool, error) {
	aix, err := c.ix(ctx, "addr", address)
	if err != nil {
		return false, err
	}
	var one int
	err = c.queryRow(ctx, `SELECT 1 FROM wa_session WHERE tenant=$1 AND account=$2 AND addr_ix=$3`, c.tenant, c.account, aix).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (c *Container) GetManySessions(ctx context.Context, addresses []string) (map[string][]byte, error) {
	if len(addresses) == 0 {
		return nil, nil
	}
	result := make(map[string][]byte, len(addresses))
	byIx := make(map[string]string, len(addresses))
	args := []any{c.tenant, c.account}
	for _, a := range addresses {
		result[a] = nil
		aix, err := c.ix(ctx, "addr", a)
		if err != nil {
			return nil, err
		}
		byIx[aix] = a
		args = append(args, aix)
	}
	rows, err := c.query(ctx, `SELECT addr_ix, session FROM wa_session WHERE tenant=$1 AND account=$2 AND addr_ix IN (`+placeholders(3, len(addresses))+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("wastore: get sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var aix string
		var sealed []byte
		if err := rows.Scan(&aix, &sealed); err != nil {
			return nil, err
		}
		pt, err := c.open(ctx, "wa_session", aix, "session", sealed)
		if err != nil {
			return nil, err
		}
		result[byIx[aix]] = pt
	}
	return result, rows.Err()
}

func (c *Container) PutSession(ctx context.Context, address string, session []byte) error {
	return c.putAddressed(ctx, "wa_session", "session", address, session)
}

func (c *Container) PutManySessions(ctx context.Context, sessions map[string][]byte) error {
	return c.inTx(ctx, func(ctx context.Context) error {
		for addr, s := range sessions {
			if err := c.PutSession(ctx, addr, s); err != nil {
				return err
			}
		}
		return nil
	})
}

func (c *Container) DeleteAllSessions(ctx context.Context, phone string) error {
	return c.deleteByName(ctx, "wa_session", phone)
}

func (c *Container) DeleteSession(ctx context.Context, address string) error {
	return c.deleteAddressed(ctx, "wa_session", address)
}

// MigratePNToLID moves the sessions, identity keys and sender keys kept under a phone number's
// Signal address to its LID's, as whatsmeow's own store does.
func (c *Container) MigratePNToLID(ctx context.Context, pn, lid types.JID) error {
	pnUser := pn.SignalAddressUser()
	if _, done := c.migratedPN.LoadOrStore(pnUser, struct{}{}); done {
		return nil
	}
	lidUser := lid.SignalAddressUser()
	err := c.inTx(ctx, func(ctx context.Context) error {
		for _, t := range []struct{ table, column string }{{"wa_session", "session"}, {"wa_identity", "identity"}} {
			rows, err := c.rowsByName(ctx, t.table, t.column, pnUser)
			if err != nil {
				return err
			}
			for addr, val := range rows {
				newAddr := lidUser + strings.TrimPrefix(addr, pnUser)
				if err := c.putAddressed(ctx, t.table, t.column, newAddr, val); err != nil {
					return err
				}
			}
			if err := c.deleteByName(ctx, t.table, pnUser); err != nil {
				return err
			}
		}
		return c.migrateSenderKeys(ctx, pnUser, lidUser)
	})
	if err != nil {
		c.migratedPN.Delete(pnUser)
		return fmt.Errorf("wastore: migrate %s sessions to LID: %w", "phone", err)
	}
	return nil
}

// putAddressed upserts a sealed value keyed by a Signal address.
func (c *Container) putAddressed(ctx context.Context, table, column, address string, value []byte) error {
	aix, err := c.ix(ctx, "addr", address)
	if err != nil {
		return err
	}
	nix, err := c.ix(ctx, "name", signalName(address))
	if err != nil {
		return err
	}
	sealedAddr, err := c.seal(ctx, table, aix, "addr", []byte(address))
	if err != nil {
		return err
	}
	sealed, err := c.seal(ctx, table, aix, column, value)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO `+table+` (tenant, account, addr_ix, name_ix, addr, `+column+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (tenant, account, addr_ix) DO UPDATE SET `+column+`=excluded.`+column+`, addr=excluded.addr, name_ix=excluded.name_ix`,
		c.tenant, c.account, aix, nix, sealedAddr, sealed)
	if err != nil {
		return fmt.Errorf("wastore: put %s: %w", table, err)
	}
	return nil
}

// getAddressed returns the opened value keyed by a Signal address, nil when absent.
func (c *Container) getAddressed(ctx context.Context, table, column, address string) ([]byte, error) {
	aix, err := c.ix(ctx, "addr", address)
	if err != nil {
		return nil, err
	}
	var sealed []byte
	err = c.queryRow(ctx, `SELECT `+column+` FROM `+table+` WHERE tenant=$1 AND account=$2 AND addr_ix=$3`, c.tenant, c.account, aix).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("wastore: get %s: %w", table, err)
	}
	return c.open(ctx, table, aix, column, sealed)
}

func (c *Container) deleteAddressed(ctx context.Context, table, address string) error {
	aix, err := c.ix(ctx, "addr", address)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `DELETE FROM `+table+` WHERE tenant=$1 AND account=$2 AND addr_ix=$3`, c.tenant, c.account, aix)
	return err
}

// deleteByName deletes every device's row of one Signal name (all of "name:*").
func (c *Container) deleteByName(ctx context.Context, table, name string) error {
	nix, err := c.ix(ctx, "name", name)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `DELETE FROM `+table+` WHERE tenant=$1 AND account=$2 AND name_ix=$3`, c.tenant, c.account, nix)
	return err
}

// rowsByName returns address → opened value for every device of one Signal name.
func (c *Container) rowsByName(ctx context.Context, table, column, name string) (map[string][]byte, error) {
	nix, err := c.ix(ctx, "name", name)
	if err != nil {
		return nil, err
	}
	rows, err := c.query(ctx, `SELECT addr_ix, addr, `+column+` FROM `+table+` WHERE tenant=$1 AND account=$2 AND name_ix=$3`, c.tenant, c.account, nix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var aix string
		var sealedAddr, sealed []byte
		if err := rows.Scan(&aix, &sealedAddr, &sealed); err != nil {
			return nil, err
		}
		addr, err := c.open(ctx, table, aix, "addr", sealedAddr)
		if err != nil {
			return nil, err
		}
		val, err := c.open(ctx, table, aix, column, sealed)
		if err != nil {
			return nil, err
		}
		out[string(addr)] = val
	}
	return out, rows.Err()
}

// ---- PreKeyStore ----

const maxPreKeyID = 1<<24 - 1

func (c *Container) insertPreKey(ctx context.Context, key *keys.PreKey, uploaded bool) error {
	sealed, err := c.seal(ctx, "wa_prekey", fmt.Sprint(key.KeyID), "key", key.Priv[:])
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_prekey (tenant, account, key_id, key, uploaded) VALUES ($1, $2, $3, $4, $5)`,
		c.tenant, c.account, int64(key.KeyID), sealed, boolInt(uploaded))
	if err != nil {
		return fmt.Errorf("wastore: put prekey: %w", err)
	}
	return nil
}

func (c *Container) nextPreKeyID(ctx context.Context) (uint32, error) {
	var last sql.NullInt64
	if err := c.queryRow(ctx, `SELECT MAX(key_id) FROM wa_prekey WHERE tenant=$1 AND account=$2`, c.tenant, c.account).Scan(&last); err != nil {
		return 0, fmt.Errorf("wastore: next prekey id: %w", err)
	}
	next := uint32(last.Int64) + 1
	if next > maxPreKeyID {
		return 0, errors.New("wastore: prekey ids exhausted")
	}
	return next, nil
}

func (c *Container) GenOnePreKey(ctx context.Context) (*keys.PreKey, error) {
	c.preKeyLock.Lock()
	defer c.preKeyLock.Unlock()
	id, err := c.nextPreKeyID(ctx)
	if err != nil {
		return nil, err
	}
	key := keys.NewPreKey(id)
	return key, c.insertPreKey(ctx, key, true)
}

func (c *Container) GetOrGenPreKeys(ctx context.Context, count uint32) ([]*keys.PreKey, error) {
	c.preKeyLock.Lock()
	defer c.preKeyLock.Unlock()
	rows, err := c.query(ctx, `SELECT key_id, key FROM wa_prekey WHERE tenant=$1 AND account=$2 AND uploaded=0 ORDER BY key_id LIMIT $3`,
		c.tenant, c.account, int64(count))
	if err != nil {
		return nil, fmt.Errorf("wastore: get prekeys: %w", err)
	}
	out := make([]*keys.PreKey, 0, count)
	for rows.Next() {
		k, err := c.scanPreKey(ctx, rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if uint32(len(out)) < count {
		err := c.inTx(ctx, func(ctx context.Context) error {
			id, err := c.nextPreKeyID(ctx)
			if err != nil {
				return err
			}
			for uint32(len(out)) < count {
				k := keys.NewPreKey(id)
				if err := c.insertPreKey(ctx, k, false); err != nil {
					return err
				}
				out = append(out, k)
				id++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

func (c *Container) scanPreKey(ctx context.Context, row scanner) (*keys.PreKey, error) {
	var id int64
	var sealed []byte
	if err := row.Scan(&id, &sealed); err != nil {
		return nil, err
	}
	priv, err := c.open(ctx, "wa_prekey", fmt.Sprint(id), "key", sealed)
	if err != nil {
		return nil, err
	}
	if len(priv) != 32 {
		return nil, errors.New("wastore: stored prekey has the wrong length")
	}
	return &keys.PreKey{KeyPair: *keys.NewKeyPairFromPrivateKey([32]byte(priv)), KeyID: uint32(id)}, nil
}

func (c *Container) GetPreKey(ctx context.Context, id uint32) (*keys.PreKey, error) {
	k, err := c.scanPreKey(ctx, c.queryRow(ctx, `SELECT key_id, key FROM wa_prekey WHERE tenant=$1 AND account=$2 AND key_id=$3`, c.tenant, c.account, int64(id)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return k, err
}

func (c *Container) RemovePreKey(ctx context.Context, id uint32) error {
	_, err := c.exec(ctx, `DELETE FROM wa_prekey WHERE tenant=$1 AND account=$2 AND key_id=$3`, c.tenant, c.account, int64(id))
	return err
}

func (c *Container) MarkPreKeysAsUploaded(ctx context.Context, upToID uint32) error {
	_, err := c.exec(ctx, `UPDATE wa_prekey SET uploaded=1 WHERE tenant=$1 AND account=$2 AND key_id<=$3`, c.tenant, c.account, int64(upToID))
	return err
}

func (c *Container) UploadedPreKeyCount(ctx context.Context) (int, error) {
	var n int
	err := c.queryRow(ctx, `SELECT COUNT(*) FROM wa_prekey WHERE tenant=$1 AND account=$2 AND uploaded=1`, c.tenant, c.account).Scan(&n)
	return n, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---- SenderKeyStore ----

func (c *Container) PutSenderKey(ctx context.Context, group, user string, session []byte) error {
	gix, err := c.ix(ctx, "chat", group)
	if err != nil {
		return err
	}
	six, err := c.ix(ctx, "addr", user)
	if err != nil {
		return err
	}
	nix, err := c.ix(ctx, "name", signalName(user))
	if err != nil {
		return err
	}
	row := gix + "/" + six
	sealedChat, err := c.seal(ctx, "wa_sender_key", row, "chat", []byte(group))
	if err != nil {
		return err
	}
	sealedSender, err := c.seal(ctx, "wa_sender_key", row, "sender", []byte(user))
	if err != nil {
		return err
	}
	sealed, err := c.seal(ctx, "wa_sender_key", row, "sender_key", session)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_sender_key (tenant, account, chat_ix, sender_ix, sender_name_ix, chat, sender, sender_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (tenant, account, chat_ix, sender_ix) DO UPDATE SET sender_key=excluded.sender_key`,
		c.tenant, c.account, gix, six, nix, sealedChat, sealedSender, sealed)
	if err != nil {
		return fmt.Errorf("wastore: put sender key: %w", err)
	}
	return nil
}

func (c *Container) GetSenderKey(ctx context.Context, group, user string) ([]byte, error) {
	gix, err := c.ix(ctx, "chat", group)
	if err != nil {
		return nil, err
	}
	six, err := c.ix(ctx, "addr", user)
	if err != nil {
		return nil, err
	}
	var sealed []byte
	err = c.queryRow(ctx, `SELECT sender_key FROM wa_sender_key WHERE tenant=$1 AND account=$2 AND chat_ix=$3 AND sender_ix=$4`,
		c.tenant, c.account, gix, six).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("wastore: get sender key: %w", err)
	}
	return c.open(ctx, "wa_sender_key", gix+"/"+six, "sender_key", sealed)
}

func (c *Container) migrateSenderKeys(ctx context.Context, pnUser, lidUser string) error {
	nix, err := c.ix(ctx, "name", pnUser)
	if err != nil {
		return err
	}
	rows, err := c.query(ctx, `SELECT chat_ix, sender_ix, chat, sender, sender_key FROM wa_sender_key WHERE tenant=$1 AND account=$2 AND sender_name_ix=$3`,
		c.tenant, c.account, nix)
	if err != nil {
		return err
	}
	type entry struct {
		chat, sender string
		key          []byte
	}
	var entries []entry
	for rows.Next() {
		var gix, six string
		var sc, ss, sk []byte
		if err := rows.Scan(&gix, &six, &sc, &ss, &sk); err != nil {
			rows.Close()
			return err
		}
		row := gix + "/" + six
		chat, err := c.open(ctx, "wa_sender_key", row, "chat", sc)
		if err == nil {
			var sender, key []byte
			if sender, err = c.open(ctx, "wa_sender_key", row, "sender", ss); err == nil {
				if key, err = c.open(ctx, "wa_sender_key", row, "sender_key", sk); err == nil {
					entries = append(entries, entry{string(chat), string(sender), key})
				}
			}
		}
		if err != nil {
			rows.Close()
			return err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, e := range entries {
		if err := c.PutSenderKey(ctx, e.chat, lidUser+strings.TrimPrefix(e.sender, pnUser), e.key); err != nil {
			return err
		}
	}
	_, err = c.exec(ctx, `DELETE FROM wa_sender_key WHERE tenant=$1 AND account=$2 AND sender_name_ix=$3`, c.tenant, c.account, nix)
	return err
}
