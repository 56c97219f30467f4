package crypt

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
)

// cache is a bounded, concurrency-safe map. Reads take a shared lock only; when the cache is
// full, an insert evicts an entry not used since the last sweep (second chance, in Go's random
// map order), or any entry when all were.
type cache[V any] struct {
	mu  sync.RWMutex
	max int
	m   map[string]*cacheEntry[V]
}

type cacheEntry[V any] struct {
	v    V
	used atomic.Bool
}

func newCache[V any](max int) *cache[V] {
	if max < 1 {
		max = 1
	}
	return &cache[V]{max: max, m: make(map[string]*cacheEntry[V])}
}

func (c *cache[V]) get(k string) (V, bool) {
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e == nil {
		var zero V
		return zero, false
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	return e.v, true
}

func (c *cache[V]) put(k string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.evictLocked()
	}
	c.m[k] = &cacheEntry[V]{v: v}
}

func (c *cache[V]) evictLocked() {
	var fallback string
	for k, e := range c.m {
		if !e.used.Load() {
			delete(c.m, k)
			return
		}
		e.used.Store(false)
		if fallback == "" {
			fallback = k
		}
	}
	delete(c.m, fallback)
}

func (c *cache[V]) delete(k string) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *cache[V]) deletePrefix(prefix string) {
	c.mu.Lock()
	for k := range c.m {
		if strings.HasPrefix(k, prefix) {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

func (c *cache[V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// flight makes concurrent loads of one key share a single call: a burst of first uses of a
// subject creates one data key, not one per caller.
type flight[V any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// do runs fn once for concurrent callers with the same key. The first caller runs fn with its own
// context; the others wait for it or for their own context. If the first caller's context ends
// the call, a waiter whose context is still live tries again rather than inherit that error.
func (f *flight[V]) do(ctx context.Context, key string, fn func(context.Context) (V, error)) (V, error) {
	for {
		f.mu.Lock()
		if f.calls == nil {
			f.calls = make(map[string]*flightCall[V])
		}
		if c, ok := f.calls[key]; ok {
			f.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				var zero V
				return zero, ctx.Err()
			}
			if c.err != nil && ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
				continue
			}
			return c.v, c.err
		}
		c := &flightCall[V]{done: make(chan struct{})}
		f.calls[key] = c
		f.mu.Unlock()

		c.v, c.err = fn(ctx)

		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
		return c.v, c.err
	}
}
