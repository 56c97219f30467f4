package wastore

import (
	"context"
	"fmt"
	"sync"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// lidMap is the account's LID↔phone-number mapping: sealed in the database, indexed by blind
// index, and cached in memory in full after the first use.
type lidMap struct {
	c *Container

	mu      sync.RWMutex
	loaded  bool
	pnToLID map[string]string // phone user → LID user
	lidToPN map[string]string
}

func (m *lidMap) reset() {
	m.mu.Lock()
	m.loaded = false
	m.pnToLID = map[string]string{}
	m.lidToPN = map[string]string{}
	m.mu.Unlock()
}

// ensureLoaded fills the cache from the database once. No lock is held during the database
// work: on SQLite the store shares one connection, and a goroutine holding it in a decryption
// transaction may need this map, so waiting for the connection under the lock could deadlock.
func (m *lidMap) ensureLoaded(ctx context.Context) error {
	m.mu.RLock()
	loaded := m.loaded
	m.mu.RUnlock()
	if loaded {
		return nil
	}
	c := m.c
	rows, err := c.query(ctx, `SELECT lid_ix, lid, pn FROM wa_lid_map WHERE tenant=$1 AND account=$2`, c.tenant, c.account)
	if err != nil {
		return fmt.Errorf("wastore: load LID map: %w", err)
	}
	defer rows.Close()
	lidToPN := map[string]string{}
	for rows.Next() {
		var lix string
		var sl, sp []byte
		if err := rows.Scan(&lix, &sl, &sp); err != nil {
			return err
		}
		lid, err := c.open(ctx, "wa_lid_map", lix, "lid", sl)
		if err != nil {
			return err
		}
		pn, err := c.open(ctx, "wa_lid_map", lix, "pn", sp)
		if err != nil {
			return err
		}
		lidToPN[string(lid)] = string(pn)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.loaded {
		for lid, pn := range lidToPN {
			if _, ok := m.lidToPN[lid]; !ok { // a put that raced the load is newer
				m.lidToPN[lid] = pn
				m.pnToLID[pn] = lid
			}
		}
		m.loaded = true
	}
	return nil
}

func (m *lidMap) lookup(ctx context.Context, user string, fromLID bool) (string, error) {
	if err := m.ensureLoaded(ctx); err != nil {
		return "", err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if fromLID {
		return m.lidToPN[user], nil
	}
	return m.pnToLID[user], nil
}

func (m *lidMap) GetLIDForPN(ctx context.Context, pn types.JID) (types.JID, error) {
	if pn.Server != types.DefaultUserServer {
		return types.JID{}, fmt.Errorf("wastore: GetLIDForPN called with a non-phone JID")
	}
	lid, err := m.lookup(ctx, pn.User, false)
	if err != nil || lid == "" {
		return types.JID{}, err
	}
	return types.JID{User: lid, Device: pn.Device, Server: types.HiddenUserServer}, nil
}

func (m *lidMap) GetPNForLID(ctx context.Context, lid types.JID) (types.JID, error) {
	if lid.Server != types.HiddenUserServer {
		return types.JID{}, fmt.Errorf("wastore: GetPNForLID called with a non-LID JID")
	}
	pn, err := m.lookup(ctx, lid.User, true)
	if err != nil || pn == "" {
		return types.JID{}, err
	}
	return types.JID{User: pn, Device: lid.Device, Server: types.DefaultUserServer}, nil
}

func (m *lidMap) GetManyLIDsForPNs(ctx context.Context, pns []types.JID) (map[types.JID]types.JID, error) {
	if len(pns) == 0 {
		return nil, nil
	}
	out := make(map[types.JID]types.JID, len(pns))
	for _, pn := range pns {
		if pn.Server != types.DefaultUserServer {
			continue
		}
		lid, err := m.GetLIDForPN(ctx, pn)
		if err != nil {
			return nil, err
		}
		if !lid.IsEmpty() {
			out[pn] = lid.ToNonAD()
		}
	}
	return out, nil
}

func (m *lidMap) PutLIDMapping(ctx context.Context, lid, pn types.JID) error {
	return m.PutManyLIDMappings(ctx, []store.LIDMapping{{LID: lid, PN: pn}})
}

func (m *lidMap) PutManyLIDMappings(ctx context.Context, mappings []store.LIDMapping) error {
	if err := m.ensureLoaded(ctx); err != nil {
		return err
	}
	var todo []store.LIDMapping
	m.mu.RLock()
	for _, mp := range mappings {
		if mp.LID.Server != types.HiddenUserServer || mp.PN.Server != types.DefaultUserServer {
			continue
		}
		if m.pnToLID[mp.PN.User] == mp.LID.User {
			continue
		}
		todo = append(todo, mp)
	}
	m.mu.RUnlock()
	if len(todo) == 0 {
		return nil
	}
	c := m.c
	err := c.inTx(ctx, func(ctx context.Context) error {
		for _, mp := range todo {
			lix, err := c.ix(ctx, "lid", mp.LID.User)
			if err != nil {
				return err
			}
			pix, err := c.ix(ctx, "pn", mp.PN.User)
			if err != nil {
				return err
			}
			sl, err := c.seal(ctx, "wa_lid_map", lix, "lid", []byte(mp.LID.User))
			if err != nil {
				return err
			}
			sp, err := c.seal(ctx, "wa_lid_map", lix, "pn", []byte(mp.PN.User))
			if err != nil {
				return err
			}
			if _, err := c.exec(ctx, `DELETE FROM wa_lid_map WHERE tenant=$1 AND account=$2 AND pn_ix=$3 AND lid_ix<>$4`,
				c.tenant, c.account, pix, lix); err != nil {
				return err
			}
			if _, err := c.exec(ctx, `INSERT INTO wa_lid_map (tenant, account, lid_ix, pn_ix, lid, pn) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (tenant, account, lid_ix) DO UPDATE SET pn_ix=excluded.pn_ix, pn=excluded.pn`,
				c.tenant, c.account, lix, pix, sl, sp); err != nil {
				return fmt.Errorf("wastore: put LID mapping: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		// Reload on next use rather than trust a cache the rollback may contradict.
		m.reset()
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mp := range todo {
		if old, ok := m.lidToPN[mp.LID.User]; ok {
			delete(m.pnToLID, old)
		}
		if old, ok := m.pnToLID[mp.PN.User]; ok {
			delete(m.lidToPN, old)
		}
		m.pnToLID[mp.PN.User] = mp.LID.User
		m.lidToPN[mp.LID.User] = mp.PN.User
	}
	return nil
}
