package precopy

import "unsafe"

// trackWord returns the 8-byte word at mem[off:], off a multiple of 8, for
// atomic access.
func trackWord(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }

// plainStore stores v at the word at off with an ordinary store in Go code,
// where the runtime can preempt a goroutine left waiting in a fault (it
// cannot inside a race-detector atomic), so that a test holding a writer
// blocked cannot hold up a GC.
//
//go:noinline
func plainStore(mem []byte, off int, v uint64) { *(*uint64)(unsafe.Pointer(&mem[off])) = v }
