package wastore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"go.mau.fi/whatsmeow/store"
)

// ---- AppStateSyncKeyStore ----

type syncKeyData struct {
	Data        []byte `json:"data"`
	Fingerprint []byte `json:"fingerprint"`
}

func (c *Container) PutAppStateSyncKey(ctx context.Context, id []byte, key store.AppStateSyncKey) error {
	kid := hex.EncodeToString(id)
	raw, err := json.Marshal(syncKeyData{Data: key.Data, Fingerprint: key.Fingerprint})
	if err != nil {
		return err
	}
	sealed, err := c.seal(ctx, "wa_appstate_sync_key", kid, "key_data", raw)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_appstate_sync_key (tenant, account, key_id, ts, key_data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant, account, key_id) DO UPDATE SET key_data=excluded.key_data, ts=excluded.ts
		WHERE excluded.ts > wa_appstate_sync_key.ts`,
		c.tenant, c.account, kid, key.Timestamp, sealed)
	if err != nil {
		return fmt.Errorf("wastore: put app state sync key: %w", err)
	}
	return nil
}

func (c *Container) GetAppStateSyncKey(ctx context.Context, id []byte) (*store.AppStateSyncKey, error) {
	kid := hex.EncodeToString(id)
	var ts int64
	var sealed []byte
	err := c.queryRow(ctx, `SELECT ts, key_data FROM wa_appstate_sync_key WHERE tenant=$1 AND account=$2 AND key_id=$3`,
		c.tenant, c.account, kid).Scan(&ts, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("wastore: get app state sync key: %w", err)
	}
	raw, err := c.open(ctx, "wa_appstate_sync_key", kid, "key_data", sealed)
	if err != nil {
		return nil, err
	}
	var d syncKeyData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("wastore: decode app state sync key: %w", err)
	}
	return &store.AppStateSyncKey{Data: d.Data, Fingerprint: d.Fingerprint, Timestamp: ts}, nil
}

func (c *Container) GetLatestAppStateSyncKeyID(ctx context.Context) ([]byte, error) {
	var kid string
	err := c.queryRow(ctx, `SELECT key_id FROM wa_appstate_sync_key WHERE tenant=$1 AND account=$2 ORDER BY ts DESC LIMIT 1`,
		c.tenant, c.account).Scan(&kid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return hex.DecodeString(kid)
}

// ---- AppStateStore ----

func (c *Container) PutAppStateVersion(ctx context.Context, name string, version uint64, hash [128]byte) error {
	raw := make([]byte, 8+128)
	binary.BigEndian.PutUint64(raw, version)
	copy(raw[8:], hash[:])
	sealed, err := c.seal(ctx, "wa_appstate_version", name, "state", raw)
	if err != nil {
		return err
	}
	_, err = c.exec(ctx, `INSERT INTO wa_appstate_version (tenant, account, name, state) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tenant, account, name) DO UPDATE SET state=excluded.state`, c.tenant, c.account, name, sealed)
	return err
}

func (c *Container) GetAppStateVersion(ctx context.Context, name string) (version uint64, hash [128]byte, err error) {
	var sealed []byte
	err = c.queryRow(ctx, `SELECT state FROM wa_appstate_version WHERE tenant=$1 AND account=$2 AND name=$3`, c.tenant, c.account, name).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, hash, nil
	} else if err != nil {
		return 0, hash, err
	}
	raw, err := c.open(ctx, "wa_appstate_version", name, "state", sealed)
	if err != nil {
		return 0, hash, err
	}
	if len(raw) != 8+128 {
		return 0, hash, errors.New("wastore: stored app state version has the wrong length")
	}
	copy(hash[:], raw[8:])
	return binary.BigEndian.Uint64(raw), hash, nil
}

func (c *Container) DeleteAppStateVersion(ctx context.Context, name string) error {
	_, err := c.exec(ctx, `DELETE FROM wa_appstate_version WHERE tenant=$1 AND account=$2 AND name=$3`, c.tenant, c.account, name)
	return err
}

func (c *Container) macIx(ctx context.Context, indexMAC []byte) (string, error) {
	return c.ix(ctx, "mac", hex.EncodeToString(indexMAC))
}

func (c *Container) PutAppStateMutationMACs(ctx context.Context, name string, version uint64, mutations []store.AppStateMutationMAC) error {
	if len(mutations) == 0 {
		return nil
	}
	return c.inTx(ctx, func(ctx context.Context) error {
		for _, m := range mutations {
			mix, err := c.macIx(ctx, m.IndexMAC)
			if err != nil {
				return err
			}
			sealed, err := c.seal(ctx, "wa_appstate_mac", fmt.Sprintf("%s/%d/%s", name, version, mix), "value_mac", m.ValueMAC)
			if err != nil {
				return err
			}
			_, err = c.exec(ctx, `INSERT INTO wa_appstate_mac (tenant, account, name, version, index_ix, value_mac) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (tenant, account, name, version, index_ix) DO UPDATE SET value_mac=excluded.value_mac`,
				c.tenant, c.account, name, int64(version), mix, sealed)
			if err != nil {
				return fmt.Errorf("wastore: put app state mutation mac: %w", err)
			}
		}
		return nil
	})
}

func (c *Container) DeleteAppStateMutationMACs(ctx context.Context, name string, indexMACs [][]byte) error {
	if len(indexMACs) == 0 {
		return nil
	}
	args := []any{c.tenant, c.account, name}
	for _, m := range indexMACs {
		mix, err := c.macIx(ctx, m)
		if err != nil {
			return err
		}
		args = append(args, mix)
	}
	_, err := c.exec(ctx, `DELETE FROM wa_appstate_mac WHERE tenant=$1 AND account=$2 AND name=$3 AND index_ix IN (`+placeholders(4, len(indexMACs))+`)`, args...)
	return err
}

func (c *Container) GetAppStateMutationMAC(ctx context.Context, name string, indexMAC []byte) ([]byte, error) {
	mix, err := c.macIx(ctx, indexMAC)
	if err != nil {
		return nil, err
	}
	var version int64
	var sealed []byte
	err = c.queryRow(ctx, `SELECT version, value_mac FROM wa_appstate_mac WHERE tenant=$1 AND account=$2 AND name=$3 AND index_ix=$4 ORDER BY version DESC LIMIT 1`,
		c.tenant, c.account, name, mix).Scan(&version, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return c.open(ctx, "wa_appstate_mac", fmt.Sprintf("%s/%d/%s", name, version, mix), "value_mac", sealed)
}
