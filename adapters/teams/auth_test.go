package teams

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestDeviceCodeLoginPersistsEncryptedCache: a device-code login stores MSAL's cache; a second
// process start (new objects, same database) gets a token without a new login, refreshing it
// silently; the refresh token is nowhere in the database file in plaintext; when the refresh
// token dies the account goes to reauth_required with a log line.
func TestDeviceCodeLoginPersistsEncryptedCache(t *testing.T) {
	e := newEnv(t)
	e.auth.AccessLifetime = 120 // under MSAL's 5-minute margin: a new process refreshes; over ours (1 minute): one process reuses it
	ctx := context.Background()

	// First process: `switchboard teams login`.
	auth1, err := NewAuth(e.config(), e.db.open(t))
	if err != nil {
		t.Fatal(err)
	}
	var shown DeviceCode
	id, err := auth1.Login(ctx, func(dc DeviceCode) { shown = dc })
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if shown.UserCode != "ABCD-EFGH" || !strings.Contains(shown.Message, "ABCD-EFGH") {
		t.Errorf("device code shown = %+v", shown)
	}
	if id.UserID != serviceUserID || id.Username != "svc@example.com" {
		t.Errorf("identity = %+v", id)
	}
	if auth1.State() != StateOK {
		t.Errorf("state after login = %q", auth1.State())
	}
	issued := e.auth.Tokens()
	// The same process asks again: the fresh token from memory.
	if tok, err := auth1.Token(ctx); err != nil || !slices.Contains(issued, tok) {
		t.Errorf("token after login = %q, %v", tok, err)
	}
	if _, grants, refreshes := e.auth.Counts(); grants != 1 || refreshes != 0 {
		t.Errorf("after login: %d device grants, %d refreshes", grants, refreshes)
	}
	if len(issued) != 2 {
		t.Fatalf("issued tokens = %v", issued)
	}

	// Second process: new objects over the same file, no login.
	auth2, err := NewAuth(e.config(), e.db.open(t))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth2.Token(ctx)
	if err != nil {
		t.Fatalf("token after restart: %v", err)
	}
	if !e.auth.Valid(tok) {
		t.Errorf("token %q was not issued by the authority", tok)
	}
	dcs, grants, refreshes := e.auth.Counts()
	if dcs != 1 || grants != 1 || refreshes != 1 {
		t.Errorf("device codes %d, device grants %d, refreshes %d; want 1, 1, 1 (silent refresh, no new login)", dcs, grants, refreshes)
	}
	if auth2.Identity().UserID != serviceUserID {
		t.Errorf("identity after restart = %+v", auth2.Identity())
	}

	// Nothing the authority issued is readable in the database file.
	e.db.assertNotInFiles(t, append(issued, e.auth.Tokens()...)...)

	// The refresh token dies: a third process cannot get a token and says why.
	e.auth.Revoke()
	auth3, err := NewAuth(e.config(), e.db.open(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = auth3.Token(ctx)
	var re *ReauthRequiredError
	if !errors.As(err, &re) {
		t.Fatalf("token with a dead refresh token: %v, want ReauthRequiredError", err)
	}
	if auth3.State() != StateReauthRequired {
		t.Errorf("state = %q, want reauth_required", auth3.State())
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"state":"reauth_required"`) || !strings.Contains(logs, "switchboard teams login --tenant acme --account ops") {
		t.Errorf("no reauth_required log line: %s", logs)
	}
	for _, tk := range issued {
		if strings.Contains(e.logs.String(), tk) {
			t.Errorf("a token reached the log")
		}
	}
	// A send now is retryable with a clear code, not dropped; readiness says why.
	a := e.adapter(t, nil, nil)
	if err := a.Ready(ctx); !errors.As(err, &re) {
		t.Errorf("ready = %v, want ReauthRequiredError", err)
	}
	_, err = a.Send(ctx, adapters.Outbound{To: gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsChat, Value: "19:x@thread.v2"}, Content: gateway.Content{Text: "hi"}})
	se := adapters.AsSendError(err)
	if se.Permanent || se.Code != ECodeReauthRequired || se.RetryAfter <= 0 {
		t.Errorf("send without a login: %+v", se)
	}
}

func TestNoLoginIsReauthRequired(t *testing.T) {
	e := newEnv(t)
	auth, err := NewAuth(e.config(), e.db.open(t))
	if err != nil {
		t.Fatal(err)
	}
	var re *ReauthRequiredError
	if _, err := auth.Token(context.Background()); !errors.As(err, &re) || auth.State() != StateReauthRequired {
		t.Fatalf("token without login: %v, state %q", err, auth.State())
	}
}

func TestApplicationAuth(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	if err := os.WriteFile(good, []byte("app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("app-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, certPEM := selfSignedCert(t)
	_, otherPEM := selfSignedCert(t)
	certFile, otherFile, looseCert := filepath.Join(dir, "app.pem"), filepath.Join(dir, "other.pem"), filepath.Join(dir, "loose.pem")
	for path, data := range map[string][]byte{certFile: certPEM, otherFile: otherPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(looseCert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		mod     func(*Config)
		wantErr string // config error field, or "" for a token
		reauth  bool
	}{
		{"secret", func(c *Config) { c.ClientSecret = "app-secret" }, "", false},
		{"secret file", func(c *Config) { c.ClientSecretFile = good }, "", false},
		{"loose file", func(c *Config) { c.ClientSecretFile = loose }, "tenants.acme.channels.teams.accounts.ops.client_secret_file", false},
		{"no secret", func(c *Config) {}, "tenants.acme.channels.teams.accounts.ops.client_secret", false},
		{"wrong secret", func(c *Config) { c.ClientSecret = "nope" }, "", true},
		{"certificate", func(c *Config) { c.CertificateFile = certFile }, "", false},
		{"loose certificate file", func(c *Config) { c.CertificateFile = looseCert }, "tenants.acme.channels.teams.accounts.ops.certificate_file", false},
		{"unregistered certificate", func(c *Config) { c.CertificateFile = otherFile }, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.auth.ClientCertificate = cert
			cfg := e.config()
			cfg.Auth = Application
			tc.mod(&cfg)
			auth, err := NewAuth(cfg, e.db.open(t))
			if tc.wantErr != "" {
				if gateway.ErrorField(err) != tc.wantErr && !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tok, err := auth.Token(context.Background())
			if tc.reauth {
				var re *ReauthRequiredError
				if !errors.As(err, &re) {
					t.Fatalf("wrong secret: %v", err)
				}
				return
			}
			if err != nil || !e.auth.Valid(tok) {
				t.Fatalf("token = %q, %v", tok, err)
			}
			if _, err := auth.Login(context.Background(), func(DeviceCode) {}); gateway.ErrorCode(err) != gateway.EInvalidField {
				t.Errorf("login of an application account: %v", err)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	base := func() Config {
		return Config{Tenant: "acme", Account: "ops", TenantID: "tid", ClientID: "cid"}
	}
	cases := []struct {
		name      string
		mod       func(*Config)
		field     string // expected error field ("" = valid)
		authority string
		graph     string
	}{
		{"defaults", func(*Config) {}, "", "https://login.microsoftonline.com/tid", "https://graph.microsoft.com"},
		{"usgov", func(c *Config) { c.Cloud = "usgov" }, "", "https://login.microsoftonline.us/tid", "https://graph.microsoft.us"},
		{"china", func(c *Config) { c.Cloud = "china" }, "", "https://login.chinacloudapi.cn/tid", "https://microsoftgraph.chinacloudapi.cn"},
		{"explicit", func(c *Config) {
			c.AuthorityURL, c.GraphURL = "https://login.example/", "http://127.0.0.1:9/v1.0"
		}, "", "https://login.example/tid", "http://127.0.0.1:9"},
		{"unknown cloud", func(c *Config) { c.Cloud = "mars" }, "tenants.acme.channels.teams.accounts.ops.cloud", "", ""},
		{"no tenant id", func(c *Config) { c.TenantID = "" }, "tenants.acme.channels.teams.accounts.ops.tenant_id", "", ""},
		{"no client id", func(c *Config) { c.ClientID = "" }, "tenants.acme.channels.teams.accounts.ops.client_id", "", ""},
		{"bad auth", func(c *Config) { c.Auth = "magic" }, "tenants.acme.channels.teams.accounts.ops.auth", "", ""},
		{"http authority", func(c *Config) { c.AuthorityURL = "http://login.example" }, "tenants.acme.channels.teams.accounts.ops.authority_url", "", ""},
		{"bad channel", func(c *Config) { c.Channels = []string{"team-only"} }, "tenants.acme.channels.teams.accounts.ops.channels", "", ""},
		{"http public url", func(c *Config) { c.PublicURL = "http://gw.example" }, "server.public_url", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			ep, err := c.normalize()
			if tc.field != "" {
				if gateway.ErrorField(err) != tc.field {
					t.Fatalf("err = %v (field %q), want field %q", err, gateway.ErrorField(err), tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.authority != tc.authority || ep.graphRoot != tc.graph {
				t.Errorf("endpoints = %+v", ep)
			}
			if c.Auth != Delegated || len(c.Scopes) != 1 || c.Scopes[0] != tc.graph+"/.default" {
				t.Errorf("defaults: auth %q scopes %v", c.Auth, c.Scopes)
			}
		})
	}
}

// selfSignedCert returns an app registration's certificate and a PEM file body holding it with its
// private key, as `certificate_file` expects.
func selfSignedCert(t *testing.T) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	body := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	body = append(body, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})...)
	return cert, body
}
