package delivery_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

func TestInternalTargetsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tests := []struct {
		name, url string
	}{
		{"loopback ip", srv.URL},
		{"name resolving to loopback", "http://localhost:" + port + "/"},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/"},
		{"private", "http://10.0.0.1:9/"},
		{"ipv6 loopback", "http://[::1]:" + port + "/"},
		{"mapped loopback", "http://[::ffff:127.0.0.1]:" + port + "/"},
		{"unspecified", "http://0.0.0.0:" + port + "/"},
	}
	client := delivery.NewClient(false, 5*time.Second)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Post(tt.url, "application/json", nil)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s was reached", tt.url)
			}
			if gateway.ErrorCode(err) != gateway.EForbidden {
				t.Fatalf("err = %v, want forbidden", err)
			}
		})
	}
	t.Run("allowed by config", func(t *testing.T) {
		resp, err := delivery.NewClient(true, 5*time.Second).Post(srv.URL, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
}

// TestErrorClassOfRefusedTarget: a target refused by the dial-time guard is logged as
// forbidden_target, an HTTP answer by its class.
func TestErrorClassOfRefusedTarget(t *testing.T) {
	secret, _ := delivery.ParseSecret(delivery.NewSecret())
	e := delivery.Endpoint{ID: "a", Tenant: "acme", URL: "http://127.0.0.1:9/hook", Secrets: []delivery.Secret{secret}}
	status, err := delivery.Post(t.Context(), delivery.NewClient(false, time.Second), e, "evt_1", time.Now(), []byte(`{}`))
	if got := delivery.ErrorClass(status, err); got != "forbidden_target" {
		t.Fatalf("class %q of %v", got, err)
	}
	for _, tt := range []struct {
		status int
		want   string
	}{{503, "http_5xx"}, {404, "http_4xx"}, {302, "http_3xx"}} {
		if got := delivery.ErrorClass(tt.status, errors.New("answered")); got != tt.want {
			t.Errorf("ErrorClass(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
	if got := delivery.ErrorClass(200, nil); got != "" {
		t.Errorf("success class %q", got)
	}
}
