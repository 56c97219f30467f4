package whatsapp

import (
	"context"
	"net/http"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"
)

// Client is the part of whatsmeow's client the adapter uses. Tests implement it with a fake and
// feed it whatsmeow's own event types.
type Client interface {
	// Connect opens the websocket. ctx bounds the connection's lifetime, not only the dial.
	Connect(ctx context.Context) error
	Disconnect()
	IsConnected() bool
	IsLoggedIn() bool
	// AddEventHandler registers h; h returns false when it failed, and whatsmeow then does not
	// acknowledge the event (SynchronousAck), so the server delivers it again.
	AddEventHandler(h func(evt any) bool) uint32
	RemoveEventHandler(id uint32) bool
	GenerateMessageID() types.MessageID
	SendMessage(ctx context.Context, to types.JID, msg *waE2E.Message, extra ...whatsmeow.SendRequestExtra) (whatsmeow.SendResponse, error)
	Upload(ctx context.Context, data []byte, mediaType whatsmeow.MediaType) (whatsmeow.UploadResponse, error)
	IsOnWhatsApp(ctx context.Context, phones []string) ([]types.IsOnWhatsAppResponse, error)
	// GetGroupInfo asks for a group's members (their count sets how a group message's status moves).
	GetGroupInfo(ctx context.Context, jid types.JID) (*types.GroupInfo, error)
	// Logout unlinks the device on WhatsApp's side and deletes its store.
	Logout(ctx context.Context) error
}

// LinkClient is what linking needs on top of Client.
type LinkClient interface {
	Client
	// GetQRChannel must be called before Connect; it yields codes, then success, timeout or an error.
	GetQRChannel(ctx context.Context) (<-chan whatsmeow.QRChannelItem, error)
	// PairPhone asks for a pairing code for phone (digits, international); call it after the
	// first QR event.
	PairPhone(ctx context.Context, phone string) (string, error)
	// LinkedJID is the device JID once pairing succeeded, empty before.
	LinkedJID() types.JID
}

// ClientFactory makes the client of one device. NewWhatsmeowClient is the real one.
type ClientFactory func(dev *store.Device) LinkClient

// ClientOptions tune real whatsmeow clients.
type ClientOptions struct {
	Log waLog.Logger
	// HTTPClient, when set, carries the websocket (tests point it at a closed port; deployments
	// may route it through a proxy).
	HTTPClient *http.Client
}

// NewWhatsmeowClient returns a ClientFactory for real whatsmeow clients, configured for lossless
// receive: SynchronousAck and the decrypted-event buffer on, whatsmeow's own reconnect loop off
// (the adapter reconnects with capped backoff and jitter).
func NewWhatsmeowClient(opts ClientOptions) ClientFactory {
	return func(dev *store.Device) LinkClient {
		log := opts.Log
		if log == nil {
			log = waLog.Noop
		}
		cli := whatsmeow.NewClient(dev, log)
		cli.SynchronousAck = true
		cli.EnableDecryptedEventBuffer = true
		cli.EnableAutoReconnect = false
		cli.InitialAutoReconnect = false
		cli.ManualHistorySyncDownload = true // history is not ours to process
		if opts.HTTPClient != nil {
			cli.SetWebsocketHTTPClient(opts.HTTPClient)
			cli.SetPreLoginHTTPClient(opts.HTTPClient)
		}
		return &realClient{Client: cli}
	}
}

type realClient struct{ *whatsmeow.Client }

func (c *realClient) Connect(ctx context.Context) error { return c.Client.ConnectContext(ctx) }

func (c *realClient) AddEventHandler(h func(evt any) bool) uint32 {
	return c.Client.AddEventHandlerWithSuccessStatus(h)
}

func (c *realClient) PairPhone(ctx context.Context, phone string) (string, error) {
	return c.Client.PairPhone(ctx, phone, true, whatsmeow.PairClientChrome, "Chrome (Linux)")
}

func (c *realClient) LinkedJID() types.JID { return c.Client.Store.GetJID() }
