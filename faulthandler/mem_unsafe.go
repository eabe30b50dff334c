package faulthandler

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// addrOf returns the address of b's first byte. b must not be empty.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

var epoch = time.Now()

// nanotime is a monotonic clock in nanoseconds.
func nanotime() int64 { return int64(time.Since(epoch)) }

// reserveInaccessible replaces the mapping at mem with an inaccessible
// one of the same size (PROT_NONE, MAP_FIXED): the address range stays
// reserved, so no later mapping can land there, and a thread that touches
// it gets SIGSEGV. The old mapping's pages, and its userfaultfd
// registration, go with it.
func reserveInaccessible(mem []byte) error {
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(unsafe.SliceData(mem)), uintptr(len(mem)), unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED|unix.MAP_NORESERVE)
	return err
}
