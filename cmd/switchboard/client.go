package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// apiClient talks to a running gateway's HTTP API, as an integrator would.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

type clientFlags struct {
	url string
	key string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "url", os.Getenv("SWITCHBOARD_URL"), "gateway base URL (default: from the config's server.listen)")
	cmd.Flags().StringVar(&f.key, "api-key", "", "API key (default: SWITCHBOARD_API_KEY, or <data_dir>/demo.apikey in --dev)")
}

func (g *globals) client(cmd *cobra.Command, f *clientFlags) (*apiClient, error) {
	base, key := f.url, f.key
	if key == "" {
		key = os.Getenv("SWITCHBOARD_API_KEY")
	}
	if base == "" || key == "" {
		cfg, err := g.load(cmd)
		if err != nil && base == "" {
			return nil, err
		}
		if cfg != nil {
			if base == "" {
				base = baseURL(cfg.Server.Listen)
			}
			if key == "" {
				if b, err := os.ReadFile(filepath.Join(cfg.DataDir, "demo.apikey")); err == nil {
					key = strings.TrimSpace(string(b))
				}
			}
		}
	}
	if key == "" {
		return nil, gateway.Errorf(gateway.EUnauthorized, "no API key: pass --api-key or set SWITCHBOARD_API_KEY (create one with `switchboard keys create --tenant T`)")
	}
	return &apiClient{base: strings.TrimRight(base, "/"), key: key, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// baseURL turns a listen address into a URL a local client can reach.
func baseURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://127.0.0.1:8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// do sends a JSON request and decodes a JSON answer into out; an API error becomes a *gateway.Error.
func (c *apiClient) do(ctx context.Context, method, path string, body any, headers map[string]string, out any) error {
	var rd io.Reader
	contentType := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
		contentType = "application/json"
	}
	resp, err := c.open(ctx, c.http, method, path, contentType, rd, headers)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// open sends a request with the API key and returns a successful answer for the caller to read
// and close; an API error becomes a *gateway.Error.
func (c *apiClient) open(ctx context.Context, hc *http.Client, method, path, contentType string, body io.Reader, headers map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, gateway.WrapError(gateway.EUnavailable, err, "the gateway at %s is not reachable (is `switchboard serve` running?)", c.base)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code, Message, Field string } `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) == nil && e.Error.Code != "" {
			return nil, &gateway.Error{Code: e.Error.Code, Field: e.Error.Field, Message: e.Error.Message}
		}
		return nil, gateway.Errorf(gateway.EInternal, "HTTP %d from the gateway", resp.StatusCode)
	}
	return resp, nil
}

// show calls the API and prints its JSON answer: what most client commands do.
func (c *apiClient) show(ctx context.Context, w io.Writer, method, path string, body any, headers map[string]string) error {
	var out map[string]any
	if err := c.do(ctx, method, path, body, headers, &out); err != nil {
		return err
	}
	return printJSON(w, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSendCmd(g *globals) *cobra.Command {
	var f clientFlags
	var channel, to, from, text, idem string
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Send a message through a running gateway (POST /v1/messages)",
		Example: `  switchboard send --dev --to +4915112345678 --text "Your parcel arrives today"
  switchboard send --dev --to teams:chat:19:abc@thread.v2 --text "Deploy finished"`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			body := map[string]any{"to": to, "text": text}
			if channel != "" {
				body["channel"] = channel
			} else if !strings.HasPrefix(to, "teams:") {
				body["channel"] = string(gateway.WhatsApp)
			}
			if from != "" {
				body["from"] = from
			}
			headers := map[string]string{}
			if idem != "" {
				headers["Idempotency-Key"] = idem
			}
			return c.show(cmd.Context(), g.stdout, http.MethodPost, "/v1/messages", body, headers)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&channel, "channel", "", "whatsapp or teams (default: teams for teams: addresses, else whatsapp)")
	cmd.Flags().StringVar(&to, "to", "", "recipient: +E164, a group JID, or teams:chat:|channel:|user:")
	cmd.Flags().StringVar(&from, "from", "", "account to send from (default: the channel's first account)")
	cmd.Flags().StringVar(&text, "text", "", "message text")
	cmd.Flags().StringVar(&idem, "idempotency-key", "", "Idempotency-Key header: a retry with the same key sends nothing twice")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("text")
	return cmd
}

func newStatusCmd(g *globals) *cobra.Command {
	var f clientFlags
	var content bool
	cmd := &cobra.Command{
		Use:   "status MESSAGE_ID",
		Short: "Show a message's status and its history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			path := "/v1/messages/" + url.PathEscape(args[0])
			if content {
				path += "?include=content"
			}
			return c.show(cmd.Context(), g.stdout, http.MethodGet, path, nil, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&content, "content", false, "include the decrypted content")
	return cmd
}

func newSandboxCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Short: "Drive the sandbox channel of a gateway in --dev mode"}
	var f clientFlags
	var channel, account, from, text string
	inbound := &cobra.Command{
		Use:   "inbound",
		Short: "Inject an inbound message, as if the person had written to the account",
		Example: `  switchboard sandbox inbound --dev --from +4915112345678 --text STOP
  switchboard sandbox inbound --dev --channel teams --account ops --from teams:user:8b08… --text hello`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			path := "/v1/sandbox/" + url.PathEscape(channel) + "/" + url.PathEscape(account) + "/inbound"
			return c.show(cmd.Context(), g.stdout, http.MethodPost, path, map[string]string{"from": from, "text": text}, nil)
		},
	}
	f.add(inbound)
	inbound.Flags().StringVar(&channel, "channel", string(gateway.WhatsApp), "channel")
	inbound.Flags().StringVar(&account, "account", "sales", "account")
	inbound.Flags().StringVar(&from, "from", "", "the person writing: +E164 or teams:user:<id>")
	inbound.Flags().StringVar(&text, "text", "", "what they write")
	_ = inbound.MarkFlagRequired("from")
	cmd.AddCommand(inbound)
	return cmd
}
