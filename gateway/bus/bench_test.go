package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// benchPayload is the size of a Dispatch reference (the bus never carries message content).
var benchPayload = []byte(`{"message_id":"msg_01JDQ3Z8Y6V5T4S3R2Q1P0N9M8","tenant":"acme","channel":"whatsapp","account":"sales"}`)

func reportRate(b *testing.B, start time.Time, n int) {
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPublish: 64 concurrent publishers, each waiting for its PubAck (the API's accept path),
// through Bus.Publish and, as a baseline, through the raw jetstream client; with and without
// fsync on every write.
func BenchmarkPublish(b *testing.B) {
	for _, tc := range []struct {
		name       string
		raw        bool
		syncAlways bool
	}{
		{"bus", false, false},
		{"raw_jetstream", true, false},
		{"bus_sync_always", false, true},
	} {
		b.Run("publishers=64/"+tc.name, func(b *testing.B) {
			bus, err := Open(b.Context(), Config{Embedded: &Embedded{StoreDir: b.TempDir(), StoreKey: testKey, SyncAlways: tc.syncAlways}}, testLog(b))
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close(context.Background())
			js := bus.JetStream()
			const publishers = 64
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range publishers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						id := fmt.Sprint("msg_", i)
						var err error
						if tc.raw {
							_, err = js.Publish(b.Context(), SendSubject("acme"), benchPayload, jetstream.WithMsgID(id))
						} else {
							err = bus.Publish(b.Context(), SendSubject("acme"), id, benchPayload)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			reportRate(b, start, b.N)
		})
	}
}

// BenchmarkPublishBatch: one publisher, batches of 100 and 1000 published asynchronously.
func BenchmarkPublishBatch(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			bus, err := Open(b.Context(), Config{Embedded: &Embedded{StoreDir: b.TempDir(), StoreKey: testKey}}, testLog(b))
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close(context.Background())
			out := make([]Outgoing, 0, size)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; {
				out = out[:0]
				for ; len(out) < size && i < b.N; i++ {
					out = append(out, Outgoing{Subject: StatusSubject("acme"), MsgID: fmt.Sprint("evt_", i), Data: benchPayload})
				}
				for _, err := range bus.PublishBatch(b.Context(), out) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			reportRate(b, start, b.N)
		})
	}
}

// BenchmarkConsume: b.N messages published up front, then consumed with 16 handlers doing
// nothing; confirmed (double) acks against fire-and-forget acks.
func BenchmarkConsume(b *testing.B) {
	for _, async := range []bool{false, true} {
		b.Run(fmt.Sprintf("concurrency=16/async_ack=%v", async), func(b *testing.B) {
			bus, err := Open(b.Context(), Config{Embedded: &Embedded{StoreDir: b.TempDir(), StoreKey: testKey}}, testLog(b))
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close(context.Background())
			out := make([]Outgoing, 0, 1000)
			for i := 0; i < b.N; {
				out = out[:0]
				for ; len(out) < 1000 && i < b.N; i++ {
					out = append(out, Outgoing{Subject: SendSubject("acme"), MsgID: fmt.Sprint("m_", i), Data: benchPayload})
				}
				for _, err := range bus.PublishBatch(b.Context(), out) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			var n atomic.Int64
			all := make(chan struct{})
			ctx, cancel := context.WithCancel(b.Context())
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() {
				done <- bus.Consume(ctx, ConsumerConfig{Durable: "bench", FilterSubject: "sb.send.>", Concurrency: 16, AsyncAck: async},
					func(context.Context, *Msg) error {
						if n.Add(1) == int64(b.N) {
							close(all)
						}
						return nil
					})
			}()
			<-all
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			reportRate(b, start, b.N)
		})
	}
}
