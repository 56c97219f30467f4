package wastore

import (
	"context"
	"fmt"
	"strings"

	"go.mau.fi/whatsmeow/types"
)

// EraseContact removes what this account's device store holds about one person, named by phone
// number (+E164): the Signal sessions and identity keys of every device of the number and of its
// LID, the group sender keys they sent, the contact entry, the 1:1 chat's settings, the secrets
// of messages to or from them, their privacy token and the LID mapping. It returns the rows
// removed. whatsmeow sets up a fresh session the next time the number writes or is written to.
func (c *Container) EraseContact(ctx context.Context, phone string) (int64, error) {
	user := strings.TrimPrefix(strings.TrimSpace(phone), "+")
	if user == "" || strings.ContainsAny(user, "@:") {
		return 0, fmt.Errorf("wastore: erase contact: %q is not a phone number", phone)
	}
	pn := types.NewJID(user, types.DefaultUserServer)
	jids := []types.JID{pn}
	lid, err := c.lids.GetLIDForPN(ctx, pn)
	if err != nil {
		return 0, err
	}
	if !lid.IsEmpty() {
		jids = append(jids, lid.ToNonAD())
	}
	var n int64
	err = c.inTx(ctx, func(ctx context.Context) error {
		n = 0
		del := func(query, kind, value string) error {
			ix, err := c.ix(ctx, kind, value)
			if err != nil {
				return err
			}
			res, err := c.exec(ctx, query, c.tenant, c.account, ix)
			if err != nil {
				return fmt.Errorf("wastore: erase contact: %w", err)
			}
			k, _ := res.RowsAffected()
			n += k
			return nil
		}
		for _, j := range jids {
			for _, d := range []struct{ query, kind, value string }{
				{`DELETE FROM wa_session WHERE tenant=$1 AND account=$2 AND name_ix=$3`, "name", j.SignalAddressUser()},
				{`DELETE FROM wa_identity WHERE tenant=$1 AND account=$2 AND name_ix=$3`, "name", j.SignalAddressUser()},
				{`DELETE FROM wa_sender_key WHERE tenant=$1 AND account=$2 AND sender_name_ix=$3`, "name", j.SignalAddressUser()},
				{`DELETE FROM wa_contact WHERE tenant=$1 AND account=$2 AND jid_ix=$3`, "jid", j.String()},
				{`DELETE FROM wa_privacy_token WHERE tenant=$1 AND account=$2 AND user_ix=$3`, "jid", j.String()},
				{`DELETE FROM wa_msg_secret WHERE tenant=$1 AND account=$2 AND (chat_ix=$3 OR sender_ix=$3)`, "jid", j.String()},
				{`DELETE FROM wa_chat_settings WHERE tenant=$1 AND account=$2 AND chat_ix=$3`, "chat", j.String()},
			} {
				if err := del(d.query, d.kind, d.value); err != nil {
					return err
				}
			}
		}
		return del(`DELETE FROM wa_lid_map WHERE tenant=$1 AND account=$2 AND pn_ix=$3`, "pn", user)
	})
	if err != nil {
		return 0, err
	}
	c.contactLock.Lock()
	for _, j := range jids {
		delete(c.contactCache, j.String())
	}
	c.contactLock.Unlock()
	c.migratedPN.Delete(pn.SignalAddressUser())
	c.lids.reset()
	return n, nil
}
