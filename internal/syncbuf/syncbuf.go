// Package syncbuf is a byte buffer that one goroutine may write while
// another reads it: a child process's stderr, a handler's log.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it. With Max > 0 it keeps the first
// Max bytes and drops the rest (a write still reports success). The zero
// value is ready to use; its methods are safe for concurrent use.
type Buffer struct {
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p, or the part of it that fits under Max.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := p
	if b.Max > 0 {
		q = p[:min(len(p), max(0, b.Max-b.b.Len()))]
	}
	b.b.Write(q)
	return len(p), nil
}

// String returns what was kept.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
