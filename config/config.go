// Package config holds Switchboard's configuration: the types of switchboard.yaml, Load (the
// file, then SWITCHBOARD_* environment variables, then command-line flags), and the checks behind
// `switchboard config check`, which report every problem as `file:line: field.path: message`.
//
// This is the only package that reads viper or the environment. Every other package takes its own
// config struct, filled from a *Config by the composition root (gateway/server).
//
// Precedence, lowest first: built-in defaults, the YAML file, environment variables, flags. Every
// scalar setting outside `tenants` has an environment variable named after its path:
// SWITCHBOARD_ + the path upper-cased with dots as underscores, e.g. server.listen is
// SWITCHBOARD_SERVER_LISTEN, bus.embedded.store_dir is SWITCHBOARD_BUS_EMBEDDED_STORE_DIR and
// bus.urls is SWITCHBOARD_BUS_URLS (comma-separated). An empty variable counts as unset. Tenants
// are configured in the file only. Master key material never comes from the file: it comes from
// the file named by security.master_keys_file or from SWITCHBOARD_MASTER_KEYS.
//
// After Load, Parse or Dev, defaults are applied and derived values resolved: bus.embedded is
// non-nil exactly when bus.urls is empty, store.dsn is set, every configured channel has
// RequireOptIn set, and every account has the settings section of its driver (Sandbox, WhatsMeow
// or Graph) non-nil and the others nil.
package config

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Drivers an account can name. sandbox runs any channel; whatsmeow is WhatsApp only and graph is
// Teams only.
const (
	DriverSandbox   = "sandbox"
	DriverWhatsMeow = "whatsmeow"
	DriverGraph     = "graph"
)

// Store drivers.
const (
	StoreSQLite   = "sqlite"
	StorePostgres = "postgres"
)

// Teams authentication modes.
const (
	AuthDelegated   = "delegated"
	AuthApplication = "application"
)

// Config is the whole of switchboard.yaml.
type Config struct {
	// DataDir holds everything the gateway keeps on disk by default: the SQLite file, the embedded
	// NATS store, the sandbox ledgers. Default ./data.
	DataDir  string         `yaml:"data_dir"`
	Log      LogConfig      `yaml:"log"`
	Server   ServerConfig   `yaml:"server"`
	Bus      BusConfig      `yaml:"bus"`
	Store    StoreConfig    `yaml:"store"`
	Security SecurityConfig `yaml:"security"`
	Tenants  []TenantConfig `yaml:"tenants"`

	// loc says where each setting came from (file line, env var or flag), for problem reports.
	loc *locations
}

// LogConfig configures the process log and the delivery-status log lines.
type LogConfig struct {
	Level  string `yaml:"level"`  // trace|debug|info|warn|error; default info
	Format string `yaml:"format"` // json|console; default json
	File   string `yaml:"file"`   // "" = stdout
}

// ServerConfig configures the HTTP API.
type ServerConfig struct {
	Listen string `yaml:"listen"` // host:port; default ":8080"
	// PublicURL is the externally reachable base URL (https://gw.example.com), without a trailing
	// slash; needed for Teams change notifications. "" = none.
	PublicURL      string          `yaml:"public_url"`
	MaxBody        Size            `yaml:"max_body"`        // request body limit; default 1MiB
	RequestTimeout time.Duration   `yaml:"request_timeout"` // per handler; default 10s
	RateLimit      RateLimitConfig `yaml:"rate_limit"`
}

// RateLimitConfig is the per-tenant API request rate limit (token bucket).
type RateLimitConfig struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"` // default 200
	Burst             int     `yaml:"burst"`               // default 400
}

// BusConfig configures NATS JetStream. After loading, exactly one of Embedded (non-nil) or URLs
// (non-empty) is set: the embedded server is the default when no URLs are given.
type BusConfig struct {
	Embedded        *EmbeddedBusConfig `yaml:"embedded"`
	URLs            []string           `yaml:"urls"`             // nats://host:4222 …
	CredsFile       string             `yaml:"creds_file"`       // NATS credentials for URLs
	DuplicateWindow time.Duration      `yaml:"duplicate_window"` // Nats-Msg-Id dedupe window; default 2m
	StatusMaxAge    time.Duration      `yaml:"status_max_age"`   // STATUS retention; default 72h
	InboundMaxAge   time.Duration      `yaml:"inbound_max_age"`  // INBOUND retention; default 72h
	MaxDeliver      int                `yaml:"max_deliver"`      // deliveries before dead letter; default 10
	AckWait         time.Duration      `yaml:"ack_wait"`         // default 30s
}

// EmbeddedBusConfig configures the in-process NATS server.
type EmbeddedBusConfig struct {
	StoreDir string `yaml:"store_dir"` // JetStream file store; default <data_dir>/nats
	Listen   string `yaml:"listen"`    // host:port for a TCP listener; "" = in-process only
}

// StoreConfig configures the database.
type StoreConfig struct {
	Driver    string        `yaml:"driver"`     // sqlite|postgres; default sqlite
	DSN       string        `yaml:"dsn"`        // sqlite: a file path, default <data_dir>/switchboard.db; postgres: required
	BatchSize int           `yaml:"batch_size"` // group commit: most writes per transaction; default 256
	BatchWait time.Duration `yaml:"batch_wait"` // group commit: longest wait to fill a batch; default 2ms
	// KeysDSN is the key vault (the wrapped tenant and subject keys), kept apart from the data so
	// a data backup holds no keys and an erased subject's key exists nowhere. sqlite: a file,
	// default beside dsn (switchboard.keys.db); postgres: another database, default dsn itself
	// (whose backups then hold the keys: set it for backup-proof erasure).
	KeysDSN string `yaml:"keys_dsn"`
}

// SecurityConfig names where the master keys come from (DESIGN §3.6).
type SecurityConfig struct {
	// MasterKeysFile is a file of "id:base64key" lines (store/crypt.LoadMasterKeys). No default:
	// `serve --dev` uses <data_dir>/master.keys (see Dev and LoadDev).
	MasterKeysFile string `yaml:"master_keys_file"`
	// MasterKeys is the key material from SWITCHBOARD_MASTER_KEYS, in the same format as the file
	// (store/crypt.ParseMasterKeys). It is never read from YAML. When set it takes precedence over
	// MasterKeysFile.
	MasterKeys Secret `yaml:"-"`
}

// TenantConfig is one business using the gateway.
type TenantConfig struct {
	ID       string         `yaml:"id"` // [a-z0-9_-]{1,32}; goes into NATS subjects
	Channels ChannelsConfig `yaml:"channels"`
	// Automations are kept as raw YAML nodes (with their line numbers) until the automation
	// engine types them.
	Automations []yaml.Node `yaml:"automations"`
	// Rules are the automations typed and checked by Validate (config/automation.go).
	Rules []Automation `yaml:"-"`
	// Lists (name: [recipients]) and Templates (name: text) are what send.to_list and
	// send.template_name name; typed by Validate into Named (config/automation.go).
	Lists     yaml.Node `yaml:"lists"`
	Templates yaml.Node `yaml:"templates"`
	Named     Named     `yaml:"-"`
	// Webhooks are the tenant's signed event endpoints (config/webhooks.go, pipeline/delivery).
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// WebhooksAllowPrivate lets POST /v1/webhooks create endpoints on private, loopback or
	// link-local addresses (allow_private); off, the API refuses them.
	WebhooksAllowPrivate bool `yaml:"webhooks_allow_private"`
	// Retention bounds how long the tenant's messages are kept (config/retention.go).
	Retention RetentionConfig `yaml:"retention"`
}

// ChannelsConfig holds the tenant's channels; a nil channel is not configured.
type ChannelsConfig struct {
	WhatsApp *ChannelConfig `yaml:"whatsapp"`
	Teams    *ChannelConfig `yaml:"teams"`
}

// ChannelConfig is one channel of a tenant: its consent policy and its accounts.
type ChannelConfig struct {
	Consent  ConsentConfig   `yaml:"consent"`
	Accounts []AccountConfig `yaml:"accounts"`
}

// ConsentConfig is the consent policy of a channel (DESIGN §3.5).
type ConsentConfig struct {
	// RequireOptIn: sends need a recorded opt-in (or an open reply window). After loading it is
	// never nil: the default is true for WhatsApp and false for Teams.
	RequireOptIn *bool `yaml:"require_opt_in"`
	// ReplyWindow: how long an inbound message from a subject allows replies without opt-in.
	// Default 24h.
	ReplyWindow time.Duration  `yaml:"reply_window"`
	Keywords    KeywordsConfig `yaml:"keywords"`
	Replies     RepliesConfig  `yaml:"replies"`
}

// KeywordsConfig lists the single-word keywords recognised in inbound messages. Words in the file
// extend the built-in lists (opt-out STOP STOPALL UNSUBSCRIBE CANCEL END QUIT REVOKE OPTOUT,
// opt-in START YES UNSTOP, help HELP INFO); after loading each list holds the built-in words
// followed by the configured ones, upper-cased and without duplicates. Match an inbound message
// by trimming it, upper-casing it and comparing it with the list.
type KeywordsConfig struct {
	OptOut []string `yaml:"opt_out"`
	OptIn  []string `yaml:"opt_in"`
	Help   []string `yaml:"help"`
}

// RepliesConfig holds the confirmation sent when a keyword is recognised; "" sends nothing.
type RepliesConfig struct {
	OptOut string `yaml:"opt_out"`
	OptIn  string `yaml:"opt_in"`
	Help   string `yaml:"help"`
}

// AccountConfig is one account on a channel: a WhatsApp number or a Teams identity. After loading,
// the section of its driver is non-nil and the other two are nil.
type AccountConfig struct {
	Name      string           `yaml:"name"`   // [a-z0-9_-]{1,32}, unique per channel; goes into NATS subjects
	Driver    string           `yaml:"driver"` // whatsapp: sandbox|whatsmeow; teams: sandbox|graph
	Sandbox   *SandboxConfig   `yaml:"sandbox"`
	WhatsMeow *WhatsMeowConfig `yaml:"whatsmeow"`
	Graph     *GraphConfig     `yaml:"graph"`
}

// SandboxConfig scripts the sandbox driver, a simulated network for any channel.
type SandboxConfig struct {
	DeliveredAfter time.Duration `yaml:"delivered_after"` // after the send; default 200ms
	ReadAfter      time.Duration `yaml:"read_after"`      // after the send, ≥ DeliveredAfter; default 500ms
	// Fail lists recipients whose sends fail with FailCode. After loading they are canonical
	// addresses (gateway.Address.String(): E.164 for phone numbers).
	Fail     []string `yaml:"fail"`
	FailCode string   `yaml:"fail_code"` // default channel_error
	// Replies script inbound answers to sent messages.
	Replies []SandboxReply `yaml:"replies"`
}

// SandboxReply answers a sent message whose text contains Match (case-insensitive; "*" matches
// every message) with an inbound message from the recipient carrying Text.
type SandboxReply struct {
	Match string `yaml:"match"`
	Text  string `yaml:"text"`
}

// WhatsMeowConfig configures a WhatsApp account linked through whatsmeow.
type WhatsMeowConfig struct {
	RatePerMinute       int           `yaml:"rate_per_minute"`        // sends per minute; default 20
	Burst               int           `yaml:"burst"`                  // token bucket size; default 5
	Jitter              time.Duration `yaml:"jitter"`                 // random extra delay per send, up to; default 2s
	FirstContactPerHour int           `yaml:"first_contact_per_hour"` // sends to numbers that never wrote; default 10
	ReachoutLock        time.Duration `yaml:"reachout_lock"`          // first pause of sends to new numbers after WhatsApp's reach-out time lock (doubles, ≤24h); default 1h
	MediaMaxSize        Size          `yaml:"media_max_size"`         // default 16MiB
	DeviceName          string        `yaml:"device_name"`            // shown in the phone's linked devices; default Switchboard
}

// GraphConfig configures a Teams account on Microsoft Graph.
type GraphConfig struct {
	TenantID string `yaml:"tenant_id"` // required: the Entra tenant (GUID or domain)
	ClientID string `yaml:"client_id"` // required: the app registration's client id
	Auth     string `yaml:"auth"`      // delegated (default; device-code login of a service account) | application
	// Credentials of the application (required for auth: application, exactly one of them):
	ClientSecretEnv  string `yaml:"client_secret_env"`  // name of the env var holding the secret
	ClientSecretFile string `yaml:"client_secret_file"` // file holding the secret
	CertificateFile  string `yaml:"certificate_file"`   // PEM with certificate and private key
	// Cloud picks the endpoints: public (default), usgov or china. AuthorityURL and GraphURL
	// override them; after loading both are set, without a trailing slash: AuthorityURL is the
	// login host (the tenant id is appended), GraphURL the API host (/v1.0 is appended).
	Cloud        string        `yaml:"cloud"`
	AuthorityURL string        `yaml:"authority_url"`
	GraphURL     string        `yaml:"graph_url"`
	Chats        []string      `yaml:"chats"`         // chat ids to receive from
	Channels     []string      `yaml:"channels"`      // "<team-id>/<channel-id>" to receive from
	PollInterval time.Duration `yaml:"poll_interval"` // without a public URL; default 30s
}

// Secret is a string that does not print itself: fmt and JSON show "[redacted]". Use string(s) to
// get the value.
type Secret string

// String returns "[redacted]" for a non-empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText keeps encoders from writing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Tenant returns the tenant with the given id, or nil.
func (c *Config) Tenant(id string) *TenantConfig {
	for i := range c.Tenants {
		if c.Tenants[i].ID == id {
			return &c.Tenants[i]
		}
	}
	return nil
}

// Channel returns the tenant's configuration of ch, or nil when ch is not configured.
func (t *TenantConfig) Channel(ch gateway.Channel) *ChannelConfig {
	switch ch {
	case gateway.WhatsApp:
		return t.Channels.WhatsApp
	case gateway.Teams:
		return t.Channels.Teams
	}
	return nil
}

// Account returns the account with the given name, or nil. A nil channel has no accounts.
func (c *ChannelConfig) Account(name string) *AccountConfig {
	if c == nil {
		return nil
	}
	for i := range c.Accounts {
		if c.Accounts[i].Name == name {
			return &c.Accounts[i]
		}
	}
	return nil
}
