package precopy

import "unsafe"

// trackAddr returns the address of b's first byte. b must not be empty.
func trackAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
