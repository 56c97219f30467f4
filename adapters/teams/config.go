// Package teams is the Microsoft Teams adapter: it sends and receives Teams messages through
// Microsoft Graph (github.com/microsoftgraph/msgraph-sdk-go) as one service account.
//
// Graph lets an application identity read Teams messages but not post normal ones, so an account
// normally runs delegated: a dedicated service user logs in once with the device-code flow
// (Auth.Login, `switchboard teams login`), and the MSAL token cache — refresh token included — is
// kept encrypted in the credential store and refreshed silently. When the refresh token dies the
// account goes to state reauth_required and says so in the log. An application identity (client
// secret) can be used to receive.
//
// Receiving uses Graph change notifications when a public URL is configured (Notifications is
// the http.Handler to mount) and polls the configured chats and channels otherwise, with a
// persisted high-water mark.
//
// This is the only package that imports the Graph SDK: it is heavy to compile.
package teams

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// AuthMode is how an account authenticates to Graph.
type AuthMode string

const (
	// Delegated: a service user, logged in once by device code; needed to post messages.
	Delegated AuthMode = "delegated"
	// Application: client credentials (client secret); can read, cannot post normal messages.
	Application AuthMode = "application"
)

// cloudEndpoints returns a national cloud's login host (the tenant id is appended) and Graph root
// (without the version).
func cloudEndpoints(cloud string) (authority, graph string, ok bool) {
	switch cloud {
	case "", "public":
		return "https://login.microsoftonline.com", "https://graph.microsoft.com", true
	case "usgov":
		return "https://login.microsoftonline.us", "https://graph.microsoft.us", true
	case "china":
		return "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", true
	}
	return "", "", false
}

// Paths under server.public_url where Graph posts change notifications and lifecycle events.
const (
	NotificationPath = "/v1/channels/teams/notifications"
	LifecyclePath    = "/v1/channels/teams/lifecycle"
)

// Config is one Teams account. The composition root fills it from the YAML account entry
// (driver: graph) and resolves secrets from env or files; nothing here reads the environment.
type Config struct {
	Tenant  string // our tenant id
	Account string // our account name

	TenantID string   // Entra ID (Azure AD) tenant
	ClientID string   // app registration
	Auth     AuthMode // delegated (default) or application

	// ClientSecret for Auth=application; or ClientSecretFile, a file holding it (mode 0600).
	ClientSecret     string
	ClientSecretFile string
	// CertificateFile is, instead of a secret, a PEM file (mode 0600) with the app registration's
	// certificate and its private key: MSAL signs a client assertion with it.
	CertificateFile string
	certificatePEM  []byte

	// Cloud is public (default), usgov or china. AuthorityURL (login host, e.g.
	// https://login.microsoftonline.com; the tenant id is appended) and GraphURL (e.g.
	// https://graph.microsoft.com, without /v1.0) override it — which is also how tests point the
	// adapter at local fakes.
	Cloud        string
	AuthorityURL string
	GraphURL     string
	// Scopes requested; default <graph>/.default.
	Scopes []string

	// ServiceUserID is the service account's AAD object id. Delegated accounts learn it at login;
	// application accounts need it to recognise (and skip) their own messages.
	ServiceUserID string

	// Chats and Channels to receive from: chat ids, and "team-id/channel-id".
	Chats    []string
	Channels []string

	// PublicURL is server.public_url. When set, the adapter subscribes to change notifications
	// (NotificationPath, LifecyclePath under it); when empty, it polls.
	PublicURL string
	// ClientState is the secret Graph echoes in every notification; generated and stored
	// encrypted when empty.
	ClientState string
	// SubscriptionLifetime (default 55m; Graph allows 60m for chat messages) and RenewBefore
	// (default 15m): a subscription is renewed when it has less than RenewBefore left.
	SubscriptionLifetime time.Duration
	RenewBefore          time.Duration

	// PollInterval (default 10s) between polls; after failures it doubles up to MaxPollInterval
	// (default 5m).
	PollInterval    time.Duration
	MaxPollInterval time.Duration

	// SendInterval is the pacer's minimum gap between two posts of this account (default 250ms:
	// Teams allows a few posts per second per app and tenant).
	SendInterval time.Duration

	// HTTPClient is the base client for Graph and the login endpoints (proxy, TLS roots); nil
	// means a client with a 60s timeout.
	HTTPClient *http.Client
	// Clock is injectable for tests; nil means the wall clock.
	Clock Clock
	Log   zerolog.Logger
}

// endpoints resolved from Cloud / AuthorityURL / GraphURL.
type endpoints struct {
	authority string // https://login…/<tenant-id>
	graphRoot string // https://graph.microsoft.com
	custom    bool   // an explicit authority: no instance discovery
}

func (c *Config) normalize() (endpoints, error) {
	if c.Tenant == "" || c.Account == "" {
		return endpoints{}, gateway.Errorf(gateway.EMissingField, "teams: tenant and account are required")
	}
	field := func(f string) string {
		return "tenants." + c.Tenant + ".channels.teams.accounts." + c.Account + "." + f
	}
	if c.TenantID == "" {
		return endpoints{}, gateway.FieldErrorf(gateway.EMissingField, field("tenant_id"), "the Entra ID tenant id is required")
	}
	if c.ClientID == "" {
		return endpoints{}, gateway.FieldErrorf(gateway.EMissingField, field("client_id"), "the app registration's client id is required")
	}
	switch c.Auth {
	case "":
		c.Auth = Delegated
	case Delegated, Application:
	default:
		return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, field("auth"), "auth must be delegated or application, not %q", c.Auth)
	}
	if c.Auth == Application && c.ClientSecret == "" && c.CertificateFile != "" {
		pem, err := readSecretFile(c.CertificateFile)
		if err != nil {
			return endpoints{}, gateway.WrapError(gateway.EInvalidField, err, "%s: cannot read the certificate file", field("certificate_file"))
		}
		c.certificatePEM = []byte(pem)
	} else if c.Auth == Application && c.ClientSecret == "" {
		if c.ClientSecretFile == "" {
			return endpoints{}, gateway.FieldErrorf(gateway.EMissingField, field("client_secret"), "application auth needs a client secret (from env or client_secret_file) or a certificate_file")
		}
		b, err := readSecretFile(c.ClientSecretFile)
		if err != nil {
			return endpoints{}, gateway.WrapError(gateway.EInvalidField, err, "%s: cannot read the client secret file", field("client_secret_file"))
		}
		c.ClientSecret = b
	}
	authority, graph, ok := cloudEndpoints(c.Cloud)
	if !ok {
		return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, field("cloud"), "cloud must be public, usgov or china, not %q", c.Cloud)
	}
	ep := endpoints{authority: authority, graphRoot: graph}
	if c.AuthorityURL != "" {
		u, err := url.Parse(c.AuthorityURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, field("authority_url"), "authority_url must be an https URL such as https://login.microsoftonline.com")
		}
		ep.authority, ep.custom = strings.TrimRight(c.AuthorityURL, "/"), true
	}
	ep.authority += "/" + c.TenantID
	if c.GraphURL != "" {
		u, err := url.Parse(c.GraphURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, field("graph_url"), "graph_url must be a URL such as https://graph.microsoft.com")
		}
		ep.graphRoot = strings.TrimSuffix(strings.TrimRight(c.GraphURL, "/"), "/v1.0")
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{ep.graphRoot + "/.default"}
	}
	for _, ch := range c.Channels {
		team, channel, ok := strings.Cut(ch, "/")
		if !ok || team == "" || channel == "" || strings.Contains(channel, "/") {
			return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, field("channels"), "channels are written team-id/channel-id")
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return endpoints{}, gateway.FieldErrorf(gateway.EInvalidField, "server.public_url", "Graph only posts change notifications to an https URL")
		}
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.SubscriptionLifetime, 55*time.Minute)
	def(&c.RenewBefore, 15*time.Minute)
	if c.RenewBefore >= c.SubscriptionLifetime {
		c.RenewBefore = c.SubscriptionLifetime / 2
	}
	def(&c.PollInterval, 10*time.Second)
	def(&c.MaxPollInterval, 5*time.Minute)
	def(&c.SendInterval, 250*time.Millisecond)
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	if c.Clock == nil {
		c.Clock = WallClock{}
	}
	return ep, nil
}

// readSecretFile reads a secret from a file that only its owner may read.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", gateway.Errorf(gateway.EInvalidField, "%s is readable by group or others: chmod 600 it", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", gateway.Errorf(gateway.EInvalidField, "%s is empty", path)
	}
	return s, nil
}

// Clock is the time source of the pacer, the poller and the subscription renewer.
type Clock interface {
	Now() time.Time
	// After fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

// WallClock is the real clock.
type WallClock struct{}

func (WallClock) Now() time.Time                         { return time.Now() }
func (WallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
