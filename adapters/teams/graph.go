package teams

import (
	"context"
	"net/http"
	"net/url"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	absauth "github.com/microsoft/kiota-abstractions-go/authentication"
	absser "github.com/microsoft/kiota-abstractions-go/serialization"
	khttp "github.com/microsoft/kiota-http-go"
	jsonser "github.com/microsoft/kiota-serialization-json-go"
	textser "github.com/microsoft/kiota-serialization-text-go"
	core "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go/chats"
	"github.com/microsoftgraph/msgraph-sdk-go/subscriptions"
	msteams "github.com/microsoftgraph/msgraph-sdk-go/teams"
)

// graphClient holds the msgraph request builders of one account, all sharing one request adapter
// whose base URL is <graph_url>/v1.0.
type graphClient struct {
	adapter abs.RequestAdapter
	root    string // <graph_url>/v1.0
	chats   *chats.ChatsRequestBuilder
	teams   *msteams.TeamsRequestBuilder
	subs    *subscriptions.SubscriptionsRequestBuilder
}

// tokenProvider lets the Graph SDK (kiota) take its bearer tokens from our MSAL-backed Auth.
type tokenProvider struct {
	auth  *Auth
	hosts *absauth.AllowedHostsValidator
}

func (p *tokenProvider) GetAuthorizationToken(ctx context.Context, u *url.URL, _ map[string]interface{}) (string, error) {
	if !p.hosts.IsUrlHostValid(u) {
		// Never hand our token to a host that is not Graph (a nextLink pointing elsewhere).
		return "", nil
	}
	return p.auth.Token(ctx)
}

func (p *tokenProvider) GetAllowedHostsValidator() *absauth.AllowedHostsValidator { return p.hosts }

// newGraphClient builds the request adapter: the Graph SDK's middleware minus its own retries
// (the pipeline owns retries: a 429 becomes adapters.RetryAfter) and minus request compression,
// our tokens, and explicit (not global) serializer registries.
func newGraphClient(cfg Config, ep endpoints, auth *Auth) (*graphClient, error) {
	gu, err := url.Parse(ep.graphRoot)
	if err != nil {
		return nil, err
	}
	hosts, err := absauth.NewAllowedHostsValidatorErrorCheck([]string{gu.Hostname()})
	if err != nil {
		return nil, err
	}
	authProvider := absauth.NewBaseBearerTokenAuthenticationProvider(&tokenProvider{auth: auth, hosts: hosts})

	never := func(time.Duration, int, *http.Request, *http.Response) bool { return false }
	mw, err := khttp.GetDefaultMiddlewaresWithOptions(
		&khttp.RetryHandlerOptions{ShouldRetry: never, MaxRetries: 1},
		khttp.NewCompressionOptionsReference(false),
	)
	if err != nil {
		return nil, err
	}
	opts := core.GraphClientOptions{GraphServiceLibraryVersion: "switchboard"}
	mw = append([]khttp.Middleware{core.NewGraphTelemetryHandler(&opts)}, mw...)
	httpClient := &http.Client{
		Transport:     khttp.NewCustomTransportWithParentTransport(cfg.HTTPClient.Transport, mw...),
		Timeout:       cfg.HTTPClient.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	parse := absser.NewParseNodeFactoryRegistry()
	parse.ContentTypeAssociatedFactories["application/json"] = jsonser.NewJsonParseNodeFactory()
	parse.ContentTypeAssociatedFactories["text/plain"] = textser.NewTextParseNodeFactory()
	write := absser.NewSerializationWriterFactoryRegistry()
	write.ContentTypeAssociatedFactories["application/json"] = jsonser.NewJsonSerializationWriterFactory()
	write.ContentTypeAssociatedFactories["text/plain"] = textser.NewTextSerializationWriterFactory()

	ra, err := core.NewGraphRequestAdapterBaseWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(authProvider, opts, parse, write, httpClient)
	if err != nil {
		return nil, err
	}
	root := ep.graphRoot + "/v1.0"
	ra.SetBaseUrl(root)
	pp := func() map[string]string { return map[string]string{"baseurl": root} }
	return &graphClient{
		adapter: ra,
		root:    root,
		chats:   chats.NewChatsRequestBuilderInternal(pp(), ra),
		teams:   msteams.NewTeamsRequestBuilderInternal(pp(), ra),
		subs:    subscriptions.NewSubscriptionsRequestBuilderInternal(pp(), ra),
	}, nil
}
