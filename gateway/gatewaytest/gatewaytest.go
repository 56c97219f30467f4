// Package gatewaytest holds test helpers shared by the packages that run parts of the gateway.
package gatewaytest

import (
	"bytes"
	"sync"
)

// LogBuffer is a log sink a test can read while other goroutines write to it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
