package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway/server"
)

// chromiumPath finds Debian's headless Chromium (SWITCHBOARD_CHROMIUM overrides the path). In CI a
// missing browser fails the test; on a developer's machine it skips it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SWITCHBOARD_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err == nil {
		return path
	}
	const install = "install it with `apt-get install -y chromium chromium-driver` (as root; .ci/run does) or set SWITCHBOARD_CHROMIUM"
	if os.Getenv("CI") == "true" {
		t.Fatalf("the browser test needs Chromium at %s: %s", path, install)
	}
	t.Skipf("no Chromium at %s and CI is unset, so the browser test is skipped (with CI=true it fails): %s", path, install)
	return ""
}

// artifactDir is where the test leaves its screenshots and the gateway's log:
// SWITCHBOARD_TEST_ARTIFACTS, or a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SWITCHBOARD_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDevGateway runs the whole gateway as `serve --dev` does (tenant demo, WhatsApp sales and
// Teams ops on the sandbox driver) on a loopback port, and returns its URL and the demo API key.
func startDevGateway(t *testing.T, logPath string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	flags := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.AddFlags(flags)
	if err := flags.Parse([]string{"--data-dir", dir, "--listen", "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDev(flags)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tenants[0].WebhooksAllowPrivate = true // the test's webhook receiver listens on loopback
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, server.Options{
		Dev: true, Log: zerolog.New(logFile).With().Timestamp().Logger(),
		SandboxLinkStep: time.Second, // long enough to see each QR code, short enough for a test
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
		logFile.Close()
	})
	key, err := os.ReadFile(filepath.Join(dir, "demo.apikey"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr()
	// Run starts the adapters on its own goroutines and tells no one: /readyz is the signal.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway was not ready within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return base, strings.TrimSpace(string(key))
}

// TestDashboardInABrowser drives the dashboard in headless Chromium against a dev gateway: sign
// in with the demo key, see the sandbox accounts, send a message from the page and see it become
// read live, link the sandbox WhatsApp account (a QR code, then success), and save screenshots.
func TestDashboardInABrowser(t *testing.T) {
	chromium := chromiumPath(t)
	artifacts := artifactDir(t)
	base, key := startDevGateway(t, filepath.Join(artifacts, "gateway.log"))

	// WhatsApp lets the business write first only inside the reply window: the person writes.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/sandbox/whatsapp/sales/inbound", strings.NewReader(`{"from":"+4915112345678","text":"Hi, where is my parcel?"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("sandbox inbound: HTTP %d", resp.StatusCode)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1600))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(artifacts, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		for i, st := range steps {
			if err := chromedp.Do(ctx, st); err != nil {
				screenshot("failed.png")
				t.Fatalf("%s, step %d: %v", what, i, err)
			}
		}
	}

	// A webhook endpoint whose delivery log the page shows.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer receiver.Close()
	req, _ = http.NewRequest(http.MethodPost, base+"/v1/webhooks", strings.NewReader(`{"url":"`+receiver.URL+`/hook","events":["message.status"],"allow_private":true}`))
	req.Header.Set("Authorization", "Bearer "+key)
	var hook struct{ ID, Secret string }
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&hook); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create webhook: HTTP %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	do("sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-key")),
		chromedp.SendKeys(chromedp.CSS("#signin-key"), key),
		chromedp.Click(chromedp.CSS("#signin-submit")),
	)
	do("see the sandbox accounts",
		chromedp.WaitVisible(chromedp.CSS(`#accounts tr[data-channel="whatsapp"][data-account="sales"] td.state-ready`)),
		chromedp.WaitVisible(chromedp.CSS(`#accounts tr[data-channel="teams"][data-account="ops"] td.state-ready`)),
		chromedp.WaitVisible(chromedp.CSS(`button.link[data-account="sales"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#live[data-live="true"]`)), // the event stream is open before the send
	)

	// The key is nowhere in the page, the cookie is out of the script's reach, nothing is stored.
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, key) || strings.Contains(html, key[4:20]) {
		t.Error("the API key is in the page")
	}
	exposed, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie + '|' + localStorage.length + '|' + sessionStorage.length`))
	if err != nil {
		t.Fatal(err)
	}
	if exposed != "|0|0" {
		t.Errorf("visible to the page's script: %q", exposed)
	}

	do("send a message from the page",
		chromedp.SendKeys(chromedp.CSS("#send-to"), "+4915112345678"),
		chromedp.SendKeys(chromedp.CSS("#send-text"), "Your parcel arrives today"),
		chromedp.Click(chromedp.CSS("#send-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#send-result[data-id]`)),
	)
	id, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#send-result"), "data-id"))
	if err != nil || !strings.HasPrefix(id.Value, "msg_") {
		t.Fatalf("message id on the page: %+v %v", id, err)
	}
	do("see its status become read, live",
		chromedp.WaitVisible(chromedp.CSS(`#messages tr[data-id="`+id.Value+`"][data-status="read"] td.status-read`)),
	)
	screenshot("dashboard.png")

	do("link the sandbox WhatsApp account: a QR code",
		chromedp.Click(chromedp.CSS(`button.link[data-account="sales"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#link[data-state="qr"] #link-qr[src^="blob:"]`)),
	)
	screenshot("link-qr.png")
	do("then success",
		chromedp.WaitVisible(chromedp.CSS(`#link[data-state="success"]`)),
	)
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#link-status")))
	if err != nil || !strings.HasPrefix(status, "Linked to +15") {
		t.Errorf("link status %q %v", status, err)
	}
	screenshot("linked.png")

	do("look up the number's consent",
		chromedp.SendKeys(chromedp.CSS("#consent-subject"), "+4915112345678"),
		chromedp.Click(chromedp.CSS(`#consent-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#consent-result .consent-state")),
	)
	consent, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#consent-result .consent-state")))
	if err != nil || !strings.HasPrefix(consent, "State: ") {
		t.Errorf("consent %q %v", consent, err)
	}
	// The section lists the endpoint with its delivery log (read when the page loads: reload it
	// once the log has a line; no event reaches the test across HTTP, so poll).
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/webhooks/"+hook.ID+"/deliveries", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var log struct{ Deliveries []json.RawMessage }
		err = json.NewDecoder(resp.Body).Decode(&log)
		resp.Body.Close()
		if err == nil && len(log.Deliveries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook delivery log stayed empty: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	do("see the webhook's delivery log",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS("#webhooks .webhook table td")),
	)
	webhooks, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#webhooks")))
	if err != nil || !strings.Contains(webhooks, receiver.URL+"/hook") || !strings.Contains(webhooks, "message.status") || !strings.Contains(webhooks, "200") {
		t.Errorf("webhooks section %q %v", webhooks, err)
	}
	if strings.Contains(webhooks, hook.Secret) {
		t.Error("the webhook's secret is in the page")
	}
	screenshot("webhooks.png")
}
