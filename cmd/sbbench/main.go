// Command sbbench loads a running Switchboard gateway with concurrent keep-alive HTTP clients and,
// in the same run, two baselines at the same concurrency: a trivial net/http handler answering 202
// and raw JetStream synchronous publishes. It prints the figures and the ratios to the baselines.
//
//	sbbench -url http://127.0.0.1:8080 -key-file data/demo.apikey -c 64 -d 10s
//	sbbench ... -rate 1000 -d 30s     # a fixed offered load, to see whether the backlog grows
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type options struct {
	url, key, keyFile, to, channel string
	concurrency                    int
	duration, drainTimeout         time.Duration
	rate                           float64
	skipBaselines                  bool
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8080", "gateway base URL")
	flag.StringVar(&o.key, "key", os.Getenv("SWITCHBOARD_API_KEY"), "API key (or SWITCHBOARD_API_KEY)")
	flag.StringVar(&o.keyFile, "key-file", "data/demo.apikey", "file holding the API key, when -key is empty")
	flag.StringVar(&o.to, "to", "+4915112345678", "recipient (sandbox)")
	flag.StringVar(&o.channel, "channel", "whatsapp", "channel")
	flag.IntVar(&o.concurrency, "c", 64, "concurrent keep-alive clients")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "duration of each phase")
	flag.Float64Var(&o.rate, "rate", 0, "offered sends/s across all clients (0 = as fast as possible)")
	flag.DurationVar(&o.drainTimeout, "drain", 60*time.Second, "how long to wait for the backlog to drain after the load")
	flag.BoolVar(&o.skipBaselines, "skip-baselines", false, "measure the gateway only")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sbbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.key == "" {
		b, err := os.ReadFile(o.keyFile)
		if err != nil {
			return fmt.Errorf("no API key: pass -key, set SWITCHBOARD_API_KEY or -key-file (%w)", err)
		}
		o.key = strings.TrimSpace(string(b))
	}
	if o.concurrency < 1 {
		return errors.New("-c must be at least 1")
	}

	gw, err := loadGateway(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "gateway    %s\n", gw.summary())
	e2e, err := endToEnd(ctx, o, gw.ids)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "end-to-end %s\n", e2e.summary())
	if o.skipBaselines {
		return nil
	}

	trivial, err := loadTrivial(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "trivial    %s\n", trivial.summary())
	js, err := loadJetStream(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "jetstream  %s\n", js.summary())
	fmt.Fprintf(out, "ratio gateway/trivial   %.3f\n", gw.rate()/trivial.rate())
	fmt.Fprintf(out, "ratio gateway/jetstream %.3f\n", gw.rate()/js.rate())
	return nil
}

// phase is the result of one load phase.
type phase struct {
	ok, failed int64
	elapsed    time.Duration
	latencies  []time.Duration
	ids        []string
	firstErr   string
}

func (p *phase) rate() float64 { return float64(p.ok) / p.elapsed.Seconds() }

func (p *phase) summary() string {
	s := fmt.Sprintf("%8.0f ok/s  ok=%d failed=%d  p50=%s p99=%s", p.rate(), p.ok, p.failed,
		percentile(p.latencies, 50), percentile(p.latencies, 99))
	if p.firstErr != "" {
		s += "  first error: " + p.firstErr
	}
	return s
}

// load runs fn from o.concurrency workers for o.duration, paced to o.rate when set.
func load(ctx context.Context, o options, fn func(ctx context.Context, worker, i int) (string, error)) *phase {
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var (
		mu  sync.Mutex
		res phase
		seq atomic.Int64
		wg  sync.WaitGroup
	)
	// With a rate, send i is due at start + i/rate: an absolute schedule that a slow moment
	// does not thin out, as a ticker that drops ticks would.
	var slot atomic.Int64
	start := time.Now()
	for w := range o.concurrency {
		wg.Go(func() {
			var lat []time.Duration
			var ids []string
			var ok, failed int64
			var firstErr string
			for ctx.Err() == nil {
				if o.rate > 0 {
					due := start.Add(time.Duration(float64(slot.Add(1)-1) / o.rate * float64(time.Second)))
					select {
					case <-time.After(time.Until(due)):
					case <-ctx.Done():
						continue
					}
				}
				t0 := time.Now()
				id, err := fn(ctx, w, int(seq.Add(1)))
				if err != nil {
					if ctx.Err() == nil {
						failed++
						if firstErr == "" {
							firstErr = err.Error()
						}
					}
					continue
				}
				ok++
				lat = append(lat, time.Since(t0))
				if id != "" {
					ids = append(ids, id)
				}
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.latencies = append(res.latencies, lat...)
			res.ids = append(res.ids, ids...)
			if res.firstErr == "" {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return &res
}

func httpClient(o options) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        o.concurrency * 2,
			MaxIdleConnsPerHost: o.concurrency * 2,
			IdleConnTimeout:     90 * time.Second,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		},
	}
}

func loadGateway(ctx context.Context, o options) (*phase, error) {
	client := httpClient(o)
	url := strings.TrimRight(o.url, "/") + "/v1/messages"
	body, _ := json.Marshal(map[string]string{"channel": o.channel, "to": o.to, "text": "sbbench load message"})
	if err := ping(ctx, client, o.url); err != nil {
		return nil, err
	}
	if err := optIn(ctx, client, o); err != nil {
		return nil, err
	}
	return load(ctx, o, func(ctx context.Context, _, _ int) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+o.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct {
			ID    string `json:"id"`
			Error *struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusAccepted {
			code := ""
			if out.Error != nil {
				code = out.Error.Code
			}
			return "", fmt.Errorf("HTTP %d %s", resp.StatusCode, code)
		}
		return out.ID, nil
	}), nil
}

// optIn records the recipient's opt-in, as a business does before messaging someone on a
// channel that requires it (WhatsApp by default). An older gateway without the consent API is fine.
func optIn(ctx context.Context, client *http.Client, o options) error {
	url := strings.TrimRight(o.url, "/") + "/v1/consent/" + o.channel + "/" + o.to
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(`{"state":"opted_in","source":"import","note":"sbbench"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+o.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("recording the recipient's opt-in: HTTP %d", resp.StatusCode)
	}
	return nil
}

func ping(ctx context.Context, client *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("gateway not reachable at %s (start it with `make run`): %w", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway at %s is not ready: HTTP %d", base, resp.StatusCode)
	}
	return nil
}

// e2e is accept→delivered latency, from the gateway's own status history, and the backlog left
// when the load stopped.
type e2e struct {
	delivered         int
	backlogAtEnd      int
	drain             time.Duration
	latencies         []time.Duration
	sampled, notFinal int
}

func (e *e2e) summary() string {
	return fmt.Sprintf("accept→delivered p50=%s p99=%s (%d sampled)  backlog at end of load=%d  drained in %s  not delivered=%d",
		percentile(e.latencies, 50), percentile(e.latencies, 99), e.sampled, e.backlogAtEnd, e.drain.Round(time.Millisecond), e.notFinal)
}

// endToEnd follows a sample of the accepted messages until they are delivered: how many were not yet
// delivered when the load stopped (the backlog), how long the rest took, and the latency each saw.
func endToEnd(ctx context.Context, o options, ids []string) (*e2e, error) {
	client := httpClient(o)
	sample := ids
	if len(sample) > 2000 {
		step := len(sample) / 2000
		sample = nil
		for i := 0; i < len(ids); i += step {
			sample = append(sample, ids[i])
		}
	}
	res := &e2e{sampled: len(sample)}
	start := time.Now()
	pending := sample
	first := true
	deadline := time.Now().Add(o.drainTimeout)
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		var still []string
		var mu sync.Mutex
		var wg sync.WaitGroup
		work := make(chan string)
		for range min(o.concurrency, 16) {
			wg.Go(func() {
				for id := range work {
					lat, done, err := deliveredLatency(ctx, client, o, id)
					mu.Lock()
					if err != nil || !done {
						still = append(still, id)
					} else {
						res.latencies = append(res.latencies, lat)
					}
					mu.Unlock()
				}
			})
		}
		for _, id := range pending {
			work <- id
		}
		close(work)
		wg.Wait()
		if first {
			res.backlogAtEnd = len(still) * len(ids) / max(len(sample), 1)
			first = false
		}
		pending = still
		if len(pending) > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // polling a remote HTTP API: there is no event to wait on
			}
		}
	}
	res.drain = time.Since(start)
	res.notFinal = len(pending)
	res.delivered = len(sample) - len(pending)
	return res, nil
}

func deliveredLatency(ctx context.Context, client *http.Client, o options, id string) (time.Duration, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o.url, "/")+"/v1/messages/"+id, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Authorization", "Bearer "+o.key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var m struct {
		History []struct {
			Status string    `json:"status"`
			At     time.Time `json:"at"`
		} `json:"history"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, false, err
	}
	var accepted, delivered time.Time
	for _, h := range m.History {
		switch h.Status {
		case "accepted":
			accepted = h.At
		case "delivered":
			delivered = h.At
		}
	}
	if accepted.IsZero() || delivered.IsZero() {
		return 0, false, nil
	}
	return delivered.Sub(accepted), true, nil
}

func loadTrivial(ctx context.Context, o options) (*phase, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"msg_trivial","status":"accepted"}`)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	client := httpClient(o)
	url := "http://" + ln.Addr().String() + "/v1/messages"
	body := []byte(`{"channel":"whatsapp","to":"+4915112345678","text":"sbbench load message"}`)
	return load(ctx, o, func(ctx context.Context, _, _ int) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer x")
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return "", fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return "", nil
	}), nil
}

// loadJetStream publishes synchronously to a file-backed stream on an embedded server of its own,
// like the gateway's accept path does, from the same number of workers.
func loadJetStream(ctx context.Context, o options) (*phase, error) {
	dir, err := os.MkdirTemp("", "sbbench-js-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("embedded NATS did not start")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		return nil, err
	}
	payload := []byte(`{"message_id":"msg_01jbench","tenant":"demo","channel":"whatsapp","account":"sales"}`)
	return load(ctx, o, func(ctx context.Context, w, i int) (string, error) {
		_, err := js.Publish(ctx, "bench.send", payload, jetstream.WithMsgID(fmt.Sprintf("m-%d", i)))
		return "", err
	}), nil
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Round(10 * time.Microsecond)
}
