package ioctl

import "testing"

// TestNumbers checks against numbers the kernel headers give.
func TestNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"PAGEMAP_SCAN = _IOWR('f', 16, 96)", IOWR('f', 16, 96), 0xc0606610},
		{"USERFAULTFD_IOC_NEW = _IO(0xAA, 0)", IO(0xAA, 0), 0xaa00},
		{"UFFDIO_API = _IOWR(0xAA, 0x3F, 24)", IOWR(0xAA, 0x3F, 24), 0xc018aa3f},
		{"UFFDIO_WAKE = _IOR(0xAA, 0x02, 16)", IOR(0xAA, 0x02, 16), 0x8010aa02},
		{"FS_IOC_SETFLAGS-style _IOW('f', 2, 8)", IOW('f', 2, 8), 0x40086602},
	} {
		if c.got != c.want {
			t.Errorf("%s: %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
