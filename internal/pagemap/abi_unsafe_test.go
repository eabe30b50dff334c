package pagemap

import (
	"testing"
	"unsafe"
)

// addrOf returns the address of b's first byte. b must not be empty.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// TestStructSizes checks the Go structs against the sizes the kernel expects
// (the pm_scan_arg size is baked into the ioctl number and checked by the
// kernel against arg.size).
func TestStructSizes(t *testing.T) {
	if got := unsafe.Sizeof(pmScanArg{}); got != sizeofPMScanArg {
		t.Errorf("sizeof pm_scan_arg = %d, want %d", got, sizeofPMScanArg)
	}
	if got := unsafe.Sizeof(Region{}); got != sizeofRegion {
		t.Errorf("sizeof page_region = %d, want %d", got, sizeofRegion)
	}
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"walk_end", unsafe.Offsetof(pmScanArg{}.WalkEnd), 32},
		{"vec_len", unsafe.Offsetof(pmScanArg{}.VecLen), 48},
		{"category_inverted", unsafe.Offsetof(pmScanArg{}.CategoryInverted), 64},
		{"return_mask", unsafe.Offsetof(pmScanArg{}.ReturnMask), 88},
		{"page_region.categories", unsafe.Offsetof(Region{}.Categories), 16},
	} {
		if c.got != c.want {
			t.Errorf("offsetof %s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestIoctlNumber checks the _IOWR-built number against the value of
// PAGEMAP_SCAN computed by hand from the header: dir 3 (read|write), size
// 0x60, type 'f' (0x66), nr 16.
func TestIoctlNumber(t *testing.T) {
	if ioctlNumScan != 0xc0606610 {
		t.Errorf("PAGEMAP_SCAN = %#x, want 0xc0606610", ioctlNumScan)
	}
}
