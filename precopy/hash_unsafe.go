package precopy

import "unsafe"

// isZero reports whether b is all zero bytes, 8 bytes at a time; it stops
// at the first non-zero word, so a page with content costs almost nothing.
func isZero(b []byte) bool {
	n := len(b) / 8
	if n > 0 {
		words := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), n)
		for i := 0; i+4 <= n; i += 4 {
			if words[i]|words[i+1]|words[i+2]|words[i+3] != 0 {
				return false
			}
		}
		for i := n &^ 3; i < n; i++ {
			if words[i] != 0 {
				return false
			}
		}
	}
	for _, c := range b[n*8:] {
		if c != 0 {
			return false
		}
	}
	return true
}
