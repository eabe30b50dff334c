package precopy

import "unsafe"

// trackWord returns the 8-byte word at mem[off:], off a multiple of 8, for
// atomic access.
func trackWord(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }
