package teams

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/credstore"
)

// CredentialStore is where the adapter keeps its encrypted blobs: the MSAL token cache, the
// notification client state, subscriptions, the polling high-water marks and the 1:1 chat cache.
// *credstore.Store implements it.
type CredentialStore interface {
	Get(ctx context.Context, k credstore.Key) ([]byte, error)
	Put(ctx context.Context, k credstore.Key, value []byte) error
	Delete(ctx context.Context, k credstore.Key) error
}

// Names of the blobs the adapter keeps per account. None contains a Teams id in the clear.
const (
	blobTokenCache  = "msal_cache"
	blobClientState = "client_state"
	blobSubs        = "subscriptions"
	blobPollState   = "poll_state"
	blobUserChats   = "user_chats"
)

// AuthState is the account's standing with the identity platform.
type AuthState string

const (
	StateUnknown        AuthState = ""                // no token asked for yet
	StateOK             AuthState = "ok"              // the last token request succeeded
	StateReauthRequired AuthState = "reauth_required" // no usable refresh token: run `switchboard teams login`
)

// ECodeReauthRequired is the error code of sends and polls that failed because the account must
// log in again.
const ECodeReauthRequired = "teams_reauth_required"

// ReauthRequiredError says the account has no usable refresh token.
type ReauthRequiredError struct {
	Tenant, Account string
	Err             error
}

func (e *ReauthRequiredError) Error() string {
	return fmt.Sprintf("teams account %s/%s must log in again (switchboard teams login --tenant %s --account %s): %v",
		e.Tenant, e.Account, e.Tenant, e.Account, e.Err)
}

func (e *ReauthRequiredError) Unwrap() error { return e.Err }

// DeviceCode is what the person logging in must see: open VerificationURL and type UserCode.
type DeviceCode struct {
	Message         string // the identity platform's own instructions
	UserCode        string
	VerificationURL string
	ExpiresOn       time.Time
}

// Identity is the service account a login produced.
type Identity struct {
	UserID   string // AAD object id
	Username string // UPN
}

// Auth gets Graph access tokens for one account, through MSAL, with the token cache kept
// encrypted in the credential store. It is safe for concurrent use.
type Auth struct {
	cfg    Config
	ep     endpoints
	log    zerolog.Logger
	cache  *tokenCache
	pub    *public.Client       // delegated
	conf   *confidential.Client // application
	scopes []string

	mu       sync.Mutex
	state    AuthState
	token    string
	expires  time.Time
	identity Identity
}

// NewAuth builds the MSAL client of one account. It makes no network call.
func NewAuth(cfg Config, store CredentialStore) (*Auth, error) {
	ep, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return newAuth(cfg, ep, store)
}

func newAuth(cfg Config, ep endpoints, store CredentialStore) (*Auth, error) {
	if store == nil {
		return nil, errors.New("teams: a credential store is required")
	}
	a := &Auth{
		cfg: cfg, ep: ep, scopes: cfg.Scopes,
		log: cfg.Log.With().Str("channel", "teams").Str("tenant", cfg.Tenant).Str("account", cfg.Account).Logger(),
		cache: &tokenCache{store: store, key: credstore.Key{
			Tenant: cfg.Tenant, Channel: string(gateway.Teams), Account: cfg.Account, Name: blobTokenCache,
		}},
		identity: Identity{UserID: cfg.ServiceUserID},
	}
	switch cfg.Auth {
	case Delegated:
		opts := []public.Option{
			public.WithAuthority(ep.authority),
			public.WithCache(a.cache),
			public.WithHTTPClient(cfg.HTTPClient),
		}
		if ep.custom {
			opts = append(opts, public.WithInstanceDiscovery(false))
		}
		c, err := public.New(cfg.ClientID, opts...)
		if err != nil {
			return nil, gateway.WrapError(gateway.EInvalidField, err, "teams: cannot set up the login client")
		}
		a.pub = &c
	case Application:
		cred, err := appCredential(cfg)
		if err != nil {
			return nil, err
		}
		opts := []confidential.Option{
			confidential.WithHTTPClient(cfg.HTTPClient),
			confidential.WithCache(a.cache),
		}
		if ep.custom {
			opts = append(opts, confidential.WithInstanceDiscovery(false))
		}
		c, err := confidential.New(ep.authority, cfg.ClientID, cred, opts...)
		if err != nil {
			return nil, gateway.WrapError(gateway.EInvalidField, err, "teams: cannot set up the client-credentials client")
		}
		a.conf = &c
	}
	return a, nil
}

// appCredential is the application identity's credential: a certificate when one is configured,
// else the client secret.
func appCredential(cfg Config) (confidential.Credential, error) {
	if len(cfg.certificatePEM) > 0 {
		certs, key, err := confidential.CertFromPEM(cfg.certificatePEM, "")
		if err != nil {
			return confidential.Credential{}, gateway.WrapError(gateway.EInvalidField, err, "teams: the certificate file needs a PEM certificate and its unencrypted private key")
		}
		cred, err := confidential.NewCredFromCert(certs, key)
		if err != nil {
			return confidential.Credential{}, gateway.WrapError(gateway.EInvalidField, err, "teams: bad certificate")
		}
		return cred, nil
	}
	cred, err := confidential.NewCredFromSecret(cfg.ClientSecret)
	if err != nil {
		return confidential.Credential{}, gateway.WrapError(gateway.EInvalidField, err, "teams: bad client secret")
	}
	return cred, nil
}

// State is the account's current auth state.
func (a *Auth) State() AuthState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Identity is the service account, known after a login or the first token from the cache.
func (a *Auth) Identity() Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.identity
}

// Login runs the device-code flow for a delegated account: show is called once with the code to
// enter, then Login waits until the person has signed in (or ctx ends, or the code expires). The
// token cache, refresh token included, is stored encrypted.
func (a *Auth) Login(ctx context.Context, show func(DeviceCode)) (Identity, error) {
	if a.pub == nil {
		return Identity{}, gateway.Errorf(gateway.EInvalidField, "teams account %s/%s uses application auth: it needs no login", a.cfg.Tenant, a.cfg.Account)
	}
	dc, err := a.pub.AcquireTokenByDeviceCode(ctx, a.scopes)
	if err != nil {
		return Identity{}, gateway.WrapError(gateway.EUnavailable, err, "teams: could not start the device-code login")
	}
	show(DeviceCode{Message: dc.Result.Message, UserCode: dc.Result.UserCode, VerificationURL: dc.Result.VerificationURL, ExpiresOn: dc.Result.ExpiresOn})
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		return Identity{}, gateway.WrapError(gateway.EUnauthorized, err, "teams: the device-code login did not complete")
	}
	id := Identity{UserID: res.Account.LocalAccountID, Username: res.Account.PreferredUsername}
	a.mu.Lock()
	a.identity = id
	a.mu.Unlock()
	a.setToken(res.AccessToken, res.ExpiresOn)
	a.log.Info().Str("event", "teams_auth").Str("state", string(StateOK)).Msg("Teams service account logged in")
	return id, nil
}

// Logout forgets the account's tokens, locally and in the store.
func (a *Auth) Logout(ctx context.Context) error {
	a.mu.Lock()
	a.token, a.expires, a.state = "", time.Time{}, StateReauthRequired
	a.mu.Unlock()
	if a.pub != nil {
		accts, err := a.pub.Accounts(ctx)
		if err != nil {
			return err
		}
		for _, acc := range accts {
			if err := a.pub.RemoveAccount(ctx, acc); err != nil {
				return err
			}
		}
	}
	return a.cache.store.Delete(ctx, a.cache.key)
}

// tokenSkew: a token in memory is renewed this long before it expires (MSAL itself refreshes
// tokens with less than 5 minutes left when asked).
const tokenSkew = time.Minute

// Token returns a Graph access token, from memory while it is fresh, otherwise silently from
// MSAL (its cache, then the refresh token or the client secret). A dead refresh token gives a
// *ReauthRequiredError and moves the account to reauth_required.
func (a *Auth) Token(ctx context.Context) (string, error) {
	// Token lifetimes are wall-clock time, as MSAL's are: not the injectable clock.
	now := time.Now()
	a.mu.Lock()
	if a.token != "" && now.Add(tokenSkew).Before(a.expires) {
		t := a.token
		a.mu.Unlock()
		return t, nil
	}
	a.mu.Unlock()

	if a.conf != nil {
		res, err := a.conf.AcquireTokenByCredential(ctx, a.scopes)
		if err != nil {
			if authRejected(err) {
				return "", a.reauth(err)
			}
			return "", gateway.WrapError(gateway.EUnavailable, err, "teams: token request failed")
		}
		a.setToken(res.AccessToken, res.ExpiresOn)
		return res.AccessToken, nil
	}

	accts, err := a.pub.Accounts(ctx)
	if err != nil {
		return "", gateway.WrapError(gateway.EUnavailable, err, "teams: cannot read the token cache")
	}
	if len(accts) == 0 {
		return "", a.reauth(errors.New("no login stored"))
	}
	acc := accts[0]
	if want := a.Identity().UserID; want != "" {
		for _, x := range accts {
			if x.LocalAccountID == want {
				acc = x
			}
		}
	}
	res, err := a.pub.AcquireTokenSilent(ctx, a.scopes, public.WithSilentAccount(acc))
	if err != nil {
		if ctx.Err() != nil || transient(err) {
			return "", gateway.WrapError(gateway.EUnavailable, err, "teams: token refresh failed")
		}
		return "", a.reauth(err)
	}
	a.mu.Lock()
	if a.identity.UserID == "" {
		a.identity = Identity{UserID: acc.LocalAccountID, Username: acc.PreferredUsername}
	}
	a.mu.Unlock()
	a.setToken(res.AccessToken, res.ExpiresOn)
	return res.AccessToken, nil
}

func (a *Auth) setToken(tok string, exp time.Time) {
	a.mu.Lock()
	prev := a.state
	a.token, a.expires, a.state = tok, exp, StateOK
	a.mu.Unlock()
	if prev == StateReauthRequired {
		a.log.Info().Str("event", "teams_auth").Str("state", string(StateOK)).Msg("Teams account authenticated again")
	}
}

func (a *Auth) reauth(cause error) error {
	a.mu.Lock()
	prev := a.state
	a.token, a.expires, a.state = "", time.Time{}, StateReauthRequired
	a.mu.Unlock()
	if prev != StateReauthRequired {
		// The cause is MSAL's, about the token endpoint; it carries no token.
		a.log.Error().Str("event", "teams_auth").Str("state", string(StateReauthRequired)).Err(cause).
			Msgf("Teams account needs a new login: run `switchboard teams login --tenant %s --account %s`", a.cfg.Tenant, a.cfg.Account)
	}
	return &ReauthRequiredError{Tenant: a.cfg.Tenant, Account: a.cfg.Account, Err: cause}
}

// authRejected: the identity platform answered and refused (400 invalid_grant,
// interaction_required, 401 invalid_client …), as opposed to not being reachable.
func authRejected(err error) bool {
	var ce msalerrors.CallErr
	if errors.As(err, &ce) && ce.Resp != nil {
		return ce.Resp.StatusCode == 400 || ce.Resp.StatusCode == 401
	}
	return false
}

// transient: a network failure or a 5xx from the token endpoint, worth retrying as is.
func transient(err error) bool {
	var ce msalerrors.CallErr
	if errors.As(err, &ce) && ce.Resp != nil {
		return ce.Resp.StatusCode >= 500 || ce.Resp.StatusCode == 429
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}

// tokenCache persists MSAL's cache through the credential store (cache.ExportReplace). MSAL calls
// Replace before it reads its cache and Export after it writes, so a second process start — or
// another replica — sees the same refresh token.
type tokenCache struct {
	store CredentialStore
	key   credstore.Key
}

var _ cache.ExportReplace = (*tokenCache)(nil)

func (c *tokenCache) Replace(ctx context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	b, err := c.store.Get(ctx, c.key)
	if gateway.ErrorCode(err) == gateway.ENotFound {
		return nil
	}
	if err != nil {
		return err
	}
	return u.Unmarshal(b)
}

func (c *tokenCache) Export(ctx context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return c.store.Put(ctx, c.key, b)
}
