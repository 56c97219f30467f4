package wastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// ---- ContactStore ----

type contactInfo struct {
	FirstName     string `json:"first,omitempty"`
	FullName      string `json:"full,omitempty"`
	PushName      string `json:"push,omitempty"`
	BusinessName  string `json:"business,omitempty"`
	RedactedPhone string `json:"redacted_phone,omitempty"`
	found         bool
}

func (ci *contactInfo) public() types.ContactInfo {
	return types.ContactInfo{
		Found: ci.found, FirstName: ci.FirstName, FullName: ci.FullName,
		PushName: ci.PushName, BusinessName: ci.BusinessName, RedactedPhone: ci.RedactedPhone,
	}
}

// contact returns the cached or stored contact; callers hold contactLock.
func (c *Container) contact(ctx context.Context, user types.JID) (*contactInfo, error) {
	key := user.String()
	if ci, ok := c.contactCache[key]; ok {
		return ci, nil
	}
	jix, err := c.ix(ctx, "jid", key)
	if err != nil {
		return nil, err
	}
	var sealed []byte
	err = c.queryRow(ctx, `SELECT info FROM wa_contact WHERE tenant=$1 AND account=$2 AND jid_ix=$3`, c.tenant, c.account, jix).Scan(&sealed)
	ci := &contactInfo{}
	if err == nil {
		raw, err := c.open(ctx, "wa_contact", jix, "info", sealed)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, ci); err != nil {
			return nil, fmt.Errorf("wastore: decode contact: %w", err)
		}
		ci.found = true
	} else if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("wastore: get contact: %w", err)
	}
	c.contactCache[key] = ci
	return ci, nil
}

// putContact stores the whole contact record; callers hold contactLock.
func (c *Container) putContact(ctx context.Context, user types.JID, ci *contactInfo) error {
	key := user.String()
	jix, err := c.ix(ctx, "jid", key)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(ci)
	if err != nil {
		return err
	}
	sealedJID, err := c.seal(ctx, "wa_contact", jix, "jid", []byte(key))
	if err != nil {
		return err
	}
	sealed, err := c.seal(ctx, "wa_contact", jix, "info", raw)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_contact (tenant, account, jid_ix, jid, info) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant, account, jid_ix) DO UPDATE SET info=excluded.info`, c.tenant, c.account, jix, sealedJID, sealed)
	if err != nil {
		return fmt.Errorf("wastore: put contact: %w", err)
	}
	ci.found = true
	c.contactCache[key] = ci
	return nil
}

// updateContact applies change to a copy of the contact and stores it when change reports a
// difference.
func (c *Container) updateContact(ctx context.Context, user types.JID, change func(ci *contactInfo) bool) error {
	cur, err := c.contact(ctx, user)
	if err != nil {
		return err
	}
	next := *cur
	if !change(&next) {
		return nil
	}
	return c.putContact(ctx, user, &next)
}

func (c *Container) PutPushName(ctx context.Context, user types.JID, pushName string) (bool, string, error) {
	return c.putName(ctx, user, pushName, func(ci *contactInfo) *string { return &ci.PushName })
}

func (c *Container) PutBusinessName(ctx context.Context, user types.JID, businessName string) (bool, string, error) {
	return c.putName(ctx, user, businessName, func(ci *contactInfo) *string { return &ci.BusinessName })
}

// putName sets the contact's name that field points to and reports whether it changed and from what.
func (c *Container) putName(ctx context.Context, user types.JID, name string, field func(*contactInfo) *string) (bool, string, error) {
	c.contactLock.Lock()
	defer c.contactLock.Unlock()
	var previous string
	changed := false
	err := c.updateContact(ctx, user, func(ci *contactInfo) bool {
		f := field(ci)
		if *f == name {
			return false
		}
		previous, *f, changed = *f, name, true
		return true
	})
	if err != nil {
		return false, "", err
	}
	return changed, previous, nil
}

func (c *Container) PutContactName(ctx context.Context, user types.JID, firstName, fullName string) error {
	c.contactLock.Lock()
	defer c.contactLock.Unlock()
	return c.updateContact(ctx, user, func(ci *contactInfo) bool {
		if ci.FirstName == firstName && ci.FullName == fullName {
			return false
		}
		ci.FirstName, ci.FullName = firstName, fullName
		return true
	})
}

func (c *Container) PutAllContactNames(ctx context.Context, contacts []store.ContactEntry) error {
	return updateContacts(ctx, c, contacts, func(e store.ContactEntry) types.JID { return e.JID }, func(e store.ContactEntry, ci *contactInfo) bool {
		if ci.found && ci.FirstName == e.FirstName && ci.FullName == e.FullName {
			return false
		}
		ci.FirstName, ci.FullName = e.FirstName, e.FullName
		return true
	})
}

func (c *Container) PutManyRedactedPhones(ctx context.Context, entries []store.RedactedPhoneEntry) error {
	return updateContacts(ctx, c, entries, func(e store.RedactedPhoneEntry) types.JID { return e.JID }, func(e store.RedactedPhoneEntry, ci *contactInfo) bool {
		if ci.found && ci.RedactedPhone == e.RedactedPhone {
			return false
		}
		ci.RedactedPhone = e.RedactedPhone
		return true
	})
}

// updateContacts applies change to the contact of each entry, all in one transaction.
func updateContacts[E any](ctx context.Context, c *Container, entries []E, jid func(E) types.JID, change func(E, *contactInfo) bool) error {
	if len(entries) == 0 {
		return nil
	}
	c.contactLock.Lock()
	defer c.contactLock.Unlock()
	err := c.inTx(ctx, func(ctx context.Context) error {
		for _, e := range entries {
			if err := c.updateContact(ctx, jid(e), func(ci *contactInfo) bool { return change(e, ci) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The cache may hold values of a rolled-back transaction.
		c.contactCache = map[string]*contactInfo{}
	}
	return err
}

func (c *Container) GetContact(ctx context.Context, user types.JID) (types.ContactInfo, error) {
	c.contactLock.Lock()
	defer c.contactLock.Unlock()
	ci, err := c.contact(ctx, user)
	if err != nil {
		return types.ContactInfo{}, err
	}
	return ci.public(), nil
}

func (c *Container) GetAllContacts(ctx context.Context) (map[types.JID]types.ContactInfo, error) {
	c.contactLock.Lock()
	defer c.contactLock.Unlock()
	rows, err := c.query(ctx, `SELECT jid_ix, jid, info FROM wa_contact WHERE tenant=$1 AND account=$2`, c.tenant, c.account)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[types.JID]types.ContactInfo{}
	for rows.Next() {
		var jix string
		var sj, si []byte
		if err := rows.Scan(&jix, &sj, &si); err != nil {
			return nil, err
		}
		rawJID, err := c.open(ctx, "wa_contact", jix, "jid", sj)
		if err != nil {
			return nil, err
		}
		raw, err := c.open(ctx, "wa_contact", jix, "info", si)
		if err != nil {
			return nil, err
		}
		jid, err := types.ParseJID(string(rawJID))
		if err != nil {
			return nil, fmt.Errorf("wastore: stored contact JID: %w", err)
		}
		ci := &contactInfo{found: true}
		if err := json.Unmarshal(raw, ci); err != nil {
			return nil, fmt.Errorf("wastore: decode contact: %w", err)
		}
		out[jid] = ci.public()
		c.contactCache[jid.String()] = ci
	}
	return out, rows.Err()
}

// ---- ChatSettingsStore ----

func (c *Container) putChatSetting(ctx context.Context, chat types.JID, column string, value int64) error {
	cix, err := c.ix(ctx, "chat", chat.String())
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_chat_settings (tenant, account, chat_ix, `+column+`) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tenant, account, chat_ix) DO UPDATE SET `+column+`=excluded.`+column, c.tenant, c.account, cix, value)
	return err
}

func (c *Container) PutMutedUntil(ctx context.Context, chat types.JID, mutedUntil time.Time) error {
	var v int64
	if mutedUntil.Equal(store.MutedForever) {
		v = -1
	} else if !mutedUntil.IsZero() {
		v = mutedUntil.Unix()
	}
	return c.putChatSetting(ctx, chat, "muted_until", v)
}

func (c *Container) PutPinned(ctx context.Context, chat types.JID, pinned bool) error {
	return c.putChatSetting(ctx, chat, "pinned", int64(boolInt(pinned)))
}

func (c *Container) PutArchived(ctx context.Context, chat types.JID, archived bool) error {
	return c.putChatSetting(ctx, chat, "archived", int64(boolInt(archived)))
}

func (c *Container) GetChatSettings(ctx context.Context, chat types.JID) (types.LocalChatSettings, error) {
	var s types.LocalChatSettings
	cix, err := c.ix(ctx, "chat", chat.String())
	if err != nil {
		return s, err
	}
	var muted int64
	var pinned, archived int
	err = c.queryRow(ctx, `SELECT muted_until, pinned, archived FROM wa_chat_settings WHERE tenant=$1 AND account=$2 AND chat_ix=$3`,
		c.tenant, c.account, cix).Scan(&muted, &pinned, &archived)
	if errors.Is(err, sql.ErrNoRows) {
		return s, nil
	} else if err != nil {
		return s, err
	}
	s.Found, s.Pinned, s.Archived = true, pinned != 0, archived != 0
	if muted < 0 {
		s.MutedUntil = store.MutedForever
	} else if muted > 0 {
		s.MutedUntil = time.Unix(muted, 0)
	}
	return s, nil
}

// ---- MsgSecretStore ----

// altJID returns the other identity of a user JID (LID for a phone number and the reverse), or
// the empty JID.
func (c *Container) altJID(ctx context.Context, jid types.JID) types.JID {
	var alt types.JID
	var err error
	switch jid.Server {
	case types.DefaultUserServer:
		alt, err = c.lids.GetLIDForPN(ctx, jid)
	case types.HiddenUserServer:
		alt, err = c.lids.GetPNForLID(ctx, jid)
	}
	if err != nil {
		return types.EmptyJID
	}
	return alt
}

// candidates returns the blind indexes of a JID and of its other identity.
func (c *Container) candidates(ctx context.Context, kind string, jid types.JID) ([]any, error) {
	a, err := c.ix(ctx, kind, jid.String())
	if err != nil {
		return nil, err
	}
	out := []any{a, a}
	if alt := c.altJID(ctx, jid); !alt.IsEmpty() {
		if out[1], err = c.ix(ctx, kind, alt.ToNonAD().String()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (c *Container) PutMessageSecrets(ctx context.Context, inserts []store.MessageSecretInsert) error {
	if len(inserts) == 0 {
		return nil
	}
	return c.inTx(ctx, func(ctx context.Context) error {
		for _, in := range inserts {
			if err := c.PutMessageSecret(ctx, in.Chat, in.Sender, in.ID, in.Secret); err != nil {
				return err
			}
		}
		return nil
	})
}

func (c *Container) PutMessageSecret(ctx context.Context, chat, sender types.JID, id types.MessageID, secret []byte) error {
	chat, sender = chat.ToNonAD(), sender.ToNonAD()
	cix, err := c.ix(ctx, "jid", chat.String())
	if err != nil {
		return err
	}
	six, err := c.ix(ctx, "jid", sender.String())
	if err != nil {
		return err
	}
	row := cix + "/" + six + "/" + id
	sealedSender, err := c.seal(ctx, "wa_msg_secret", row, "sender", []byte(sender.String()))
	if err != nil {
		return err
	}
	sealed, err := c.seal(ctx, "wa_msg_secret", row, "secret", secret)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_msg_secret (tenant, account, chat_ix, sender_ix, message_id, sender, secret) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (tenant, account, chat_ix, sender_ix, message_id) DO NOTHING`,
		c.tenant, c.account, cix, six, id, sealedSender, sealed)
	if err != nil {
		return fmt.Errorf("wastore: put message secret: %w", err)
	}
	return nil
}

func (c *Container) GetMessageSecret(ctx context.Context, chat, sender types.JID, id types.MessageID) ([]byte, types.JID, error) {
	chats, err := c.candidates(ctx, "jid", chat.ToNonAD())
	if err != nil {
		return nil, types.EmptyJID, err
	}
	senders, err := c.candidates(ctx, "jid", sender.ToNonAD())
	if err != nil {
		return nil, types.EmptyJID, err
	}
	var cix, six string
	var ss, sk []byte
	err = c.queryRow(ctx, `SELECT chat_ix, sender_ix, sender, secret FROM wa_msg_secret
		WHERE tenant=$1 AND account=$2 AND message_id=$3 AND chat_ix IN ($4, $5) AND sender_ix IN ($6, $7) LIMIT 1`,
		c.tenant, c.account, id, chats[0], chats[1], senders[0], senders[1]).Scan(&cix, &six, &ss, &sk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, types.EmptyJID, nil
	} else if err != nil {
		return nil, types.EmptyJID, err
	}
	row := cix + "/" + six + "/" + id
	rawSender, err := c.open(ctx, "wa_msg_secret", row, "sender", ss)
	if err != nil {
		return nil, types.EmptyJID, err
	}
	secret, err := c.open(ctx, "wa_msg_secret", row, "secret", sk)
	if err != nil {
		return nil, types.EmptyJID, err
	}
	realSender, err := types.ParseJID(string(rawSender))
	if err != nil {
		return nil, types.EmptyJID, err
	}
	return secret, realSender, nil
}

// ---- PrivacyTokenStore ----

func (c *Container) PutPrivacyTokens(ctx context.Context, tokens ...store.PrivacyToken) error {
	return c.inTx(ctx, func(ctx context.Context) error {
		for _, t := range tokens {
			uix, err := c.ix(ctx, "jid", t.User.ToNonAD().String())
			if err != nil {
				return err
			}
			sealed, err := c.seal(ctx, "wa_privacy_token", uix, "token", t.Token)
			if err != nil {
				return err
			}
			_, err = c.exec(ctx, `INSERT INTO wa_privacy_token (tenant, account, user_ix, token, ts) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (tenant, account, user_ix) DO UPDATE SET token=excluded.token, ts=excluded.ts`,
				c.tenant, c.account, uix, sealed, t.Timestamp.Unix())
			if err != nil {
				return fmt.Errorf("wastore: put privacy token: %w", err)
			}
		}
		return nil
	})
}

func (c *Container) GetPrivacyToken(ctx context.Context, user types.JID) (*store.PrivacyToken, error) {
	user = user.ToNonAD()
	users, err := c.candidates(ctx, "jid", user)
	if err != nil {
		return nil, err
	}
	var uix string
	var sealed []byte
	var ts int64
	err = c.queryRow(ctx, `SELECT user_ix, token, ts FROM wa_privacy_token WHERE tenant=$1 AND account=$2 AND user_ix IN ($3, $4) ORDER BY ts DESC LIMIT 1`,
		c.tenant, c.account, users[0], users[1]).Scan(&uix, &sealed, &ts)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	token, err := c.open(ctx, "wa_privacy_token", uix, "token", sealed)
	if err != nil {
		return nil, err
	}
	return &store.PrivacyToken{User: user, Token: token, Timestamp: time.Unix(ts, 0)}, nil
}

// ---- EventBuffer ----

// bufferRetention is how long WhatsApp servers may redeliver an event.
const bufferRetention = 14 * 24 * time.Hour

func hashRow(h [32]byte) string { return fmt.Sprintf("%x", h[:]) }

func (c *Container) GetBufferedEvent(ctx context.Context, ciphertextHash [32]byte) (*store.BufferedEvent, error) {
	var sealed []byte
	var serverTS, insertTS int64
	err := c.queryRow(ctx, `SELECT plaintext, server_ts, insert_ts FROM wa_event_buffer WHERE tenant=$1 AND account=$2 AND ciphertext_hash=$3`,
		c.tenant, c.account, ciphertextHash[:]).Scan(&sealed, &serverTS, &insertTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("wastore: get buffered event: %w", err)
	}
	buf := &store.BufferedEvent{ServerTime: time.Unix(serverTS, 0), InsertTime: time.UnixMilli(insertTS)}
	if sealed != nil {
		if buf.Plaintext, err = c.open(ctx, "wa_event_buffer", hashRow(ciphertextHash), "plaintext", sealed); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func (c *Container) PutBufferedEvent(ctx context.Context, ciphertextHash [32]byte, plaintext []byte, serverTimestamp time.Time) error {
	if plaintext == nil {
		plaintext = []byte{}
	}
	sealed, err := c.seal(ctx, "wa_event_buffer", hashRow(ciphertextHash), "plaintext", plaintext)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_event_buffer (tenant, account, ciphertext_hash, plaintext, server_ts, insert_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		c.tenant, c.account, ciphertextHash[:], sealed, serverTimestamp.Unix(), c.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("wastore: put buffered event: %w", err)
	}
	return nil
}

// DoDecryptionTxn runs fn in one transaction: the Signal ratchet advance and the buffered
// plaintext are committed together or not at all.
func (c *Container) DoDecryptionTxn(ctx context.Context, fn func(context.Context) error) error {
	return c.inTx(ctx, fn)
}

func (c *Container) ClearBufferedEventPlaintext(ctx context.Context, ciphertextHash [32]byte) error {
	_, err := c.exec(ctx, `UPDATE wa_event_buffer SET plaintext=NULL WHERE tenant=$1 AND account=$2 AND ciphertext_hash=$3`,
		c.tenant, c.account, ciphertextHash[:])
	return err
}

func (c *Container) DeleteOldBufferedHashes(ctx context.Context) error {
	_, err := c.exec(ctx, `DELETE FROM wa_event_buffer WHERE tenant=$1 AND account=$2 AND insert_ts < $3`,
		c.tenant, c.account, c.now().Add(-bufferRetention).UnixMilli())
	return err
}
