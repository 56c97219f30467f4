package wastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	mathRand "math/rand/v2"

	"github.com/google/uuid"
	"go.mau.fi/util/random"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// ErrDeviceIDMustBeSet is returned by PutDevice for a device that has not been paired yet.
var ErrDeviceIDMustBeSet = errors.New("wastore: the device JID must be known before it is saved")

// deviceState is everything of store.Device that is persisted. It is stored as one sealed blob:
// every field of it is either key material or an identifier.
type deviceState struct {
	JID            string `json:"jid"`
	LID            string `json:"lid,omitempty"`
	RegistrationID uint32 `json:"registration_id"`

	NoiseKey        []byte `json:"noise_key"`
	IdentityKey     []byte `json:"identity_key"`
	SignedPreKey    []byte `json:"signed_pre_key"`
	SignedPreKeyID  uint32 `json:"signed_pre_key_id"`
	SignedPreKeySig []byte `json:"signed_pre_key_sig"`
	AdvSecretKey    []byte `json:"adv_key"`

	AdvDetails       []byte `json:"adv_details,omitempty"`
	AdvAccountSig    []byte `json:"adv_account_sig,omitempty"`
	AdvAccountSigKey []byte `json:"adv_account_sig_key,omitempty"`
	AdvDeviceSig     []byte `json:"adv_device_sig,omitempty"`

	Platform              string `json:"platform,omitempty"`
	BusinessName          string `json:"business_name,omitempty"`
	PushName              string `json:"push_name,omitempty"`
	FacebookUUID          string `json:"facebook_uuid,omitempty"`
	LIDMigrationTimestamp int64  `json:"lid_migration_ts,omitempty"`
}

// NewDevice returns a fresh, unpaired device with new keys, bound to this container. Nothing is
// stored until whatsmeow saves it after a successful pairing.
func (c *Container) NewDevice() *store.Device {
	d := &store.Device{
		Log:            c.log,
		NoiseKey:       keys.NewKeyPair(),
		IdentityKey:    keys.NewKeyPair(),
		RegistrationID: mathRand.Uint32(),
		AdvSecretKey:   random.Bytes(32),
	}
	d.SignedPreKey = d.IdentityKey.CreateSignedPreKey(1)
	c.initialize(d)
	return d
}

// initialize points the device's stores at this container. The stores are keyed by tenant and
// account, not by JID, so they work before the device is paired.
func (c *Container) initialize(d *store.Device) {
	d.Identities = c
	d.Sessions = c
	d.PreKeys = c
	d.SenderKeys = c
	d.AppStateKeys = c
	d.AppState = c
	d.Contacts = c
	d.ChatSettings = c
	d.MsgSecrets = c
	d.PrivacyTokens = c
	d.EventBuffer = c
	d.LIDs = c.lids
	d.Container = c
	d.Initialized = true
}

// LIDs returns the account's LID↔phone-number mapping.
func (c *Container) LIDs() store.LIDStore { return c.lids }

// Device returns the account's stored device, or nil when the account is not linked.
func (c *Container) Device(ctx context.Context) (*store.Device, error) {
	var sealed []byte
	err := c.queryRow(ctx, `SELECT state FROM wa_device WHERE tenant=$1 AND account=$2`, c.tenant, c.account).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("wastore: load device: %w", err)
	}
	raw, err := c.open(ctx, "wa_device", "device", "state", sealed)
	if err != nil {
		return nil, err
	}
	var st deviceState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("wastore: decode device: %w", err)
	}
	if len(st.NoiseKey) != 32 || len(st.IdentityKey) != 32 || len(st.SignedPreKey) != 32 || len(st.SignedPreKeySig) != 64 {
		return nil, errors.New("wastore: stored device has keys of the wrong length")
	}
	jid, err := types.ParseJID(st.JID)
	if err != nil {
		return nil, fmt.Errorf("wastore: stored device JID: %w", err)
	}
	d := &store.Device{
		Log:            c.log,
		ID:             &jid,
		RegistrationID: st.RegistrationID,
		NoiseKey:       keys.NewKeyPairFromPrivateKey([32]byte(st.NoiseKey)),
		IdentityKey:    keys.NewKeyPairFromPrivateKey([32]byte(st.IdentityKey)),
		SignedPreKey: &keys.PreKey{
			KeyPair:   *keys.NewKeyPairFromPrivateKey([32]byte(st.SignedPreKey)),
			KeyID:     st.SignedPreKeyID,
			Signature: (*[64]byte)(st.SignedPreKeySig),
		},
		AdvSecretKey: st.AdvSecretKey,
		Account: &waAdv.ADVSignedDeviceIdentity{
			Details:             st.AdvDetails,
			AccountSignature:    st.AdvAccountSig,
			AccountSignatureKey: st.AdvAccountSigKey,
			DeviceSignature:     st.AdvDeviceSig,
		},
		Platform:              st.Platform,
		BusinessName:          st.BusinessName,
		PushName:              st.PushName,
		LIDMigrationTimestamp: st.LIDMigrationTimestamp,
	}
	if st.LID != "" {
		if d.LID, err = types.ParseJID(st.LID); err != nil {
			return nil, fmt.Errorf("wastore: stored device LID: %w", err)
		}
	}
	if st.FacebookUUID != "" {
		d.FacebookUUID, _ = uuid.Parse(st.FacebookUUID)
	}
	c.initialize(d)
	return d, nil
}

// OpenDevice returns the stored device, or a new unpaired one when the account is not linked.
func (c *Container) OpenDevice(ctx context.Context) (*store.Device, error) {
	d, err := c.Device(ctx)
	if err != nil || d != nil {
		return d, err
	}
	return c.NewDevice(), nil
}

// PutDevice stores the device (whatsmeow calls it through Device.Save after pairing and when its
// names change).
func (c *Container) PutDevice(ctx context.Context, d *store.Device) error {
	if d.ID == nil {
		return ErrDeviceIDMustBeSet
	}
	st := deviceState{
		JID:                   d.ID.String(),
		RegistrationID:        d.RegistrationID,
		NoiseKey:              d.NoiseKey.Priv[:],
		IdentityKey:           d.IdentityKey.Priv[:],
		SignedPreKey:          d.SignedPreKey.Priv[:],
		SignedPreKeyID:        d.SignedPreKey.KeyID,
		AdvSecretKey:          d.AdvSecretKey,
		Platform:              d.Platform,
		BusinessName:          d.BusinessName,
		PushName:              d.PushName,
		LIDMigrationTimestamp: d.LIDMigrationTimestamp,
	}
	if d.SignedPreKey.Signature != nil {
		st.SignedPreKeySig = d.SignedPreKey.Signature[:]
	}
	if !d.LID.IsEmpty() {
		st.LID = d.LID.String()
	}
	if d.Account != nil {
		st.AdvDetails = d.Account.Details
		st.AdvAccountSig = d.Account.AccountSignature
		st.AdvAccountSigKey = d.Account.AccountSignatureKey
		st.AdvDeviceSig = d.Account.DeviceSignature
	}
	if d.FacebookUUID != uuid.Nil {
		st.FacebookUUID = d.FacebookUUID.String()
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("wastore: encode device: %w", err)
	}
	sealed, err := c.seal(ctx, "wa_device", "device", "state", raw)
	if err != nil {
		return err
	}
	now := c.now().UnixMilli()
	_, err = c.exec(ctx, `INSERT INTO wa_device (tenant, account, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
		ON CONFLICT (tenant, account) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at`,
		c.tenant, c.account, sealed, now)
	if err != nil {
		return fmt.Errorf("wastore: save device: %w", err)
	}
	if !d.Initialized {
		c.initialize(d)
	}
	return nil
}

// DeleteDevice removes the device and everything stored for it (whatsmeow calls it through
// Device.Delete on logout and after a failed pairing). When another device has been linked for
// the account since d was loaded, it is left alone: a late delete of a dead device must not
// destroy its successor.
func (c *Container) DeleteDevice(ctx context.Context, d *store.Device) error {
	if d != nil && d.ID != nil {
		cur, err := c.Device(ctx)
		if err != nil {
			return err
		}
		if cur != nil && cur.ID.String() != d.ID.String() {
			return nil
		}
	}
	return c.DeleteAll(ctx)
}
