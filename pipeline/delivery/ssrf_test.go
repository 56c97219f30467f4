package delivery_test

import (
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
