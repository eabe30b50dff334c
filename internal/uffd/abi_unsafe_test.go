package uffd

import (
	"testing"
	"unsafe"

	"github.com/loopholelabs/userfaultfd-go/pkg/constants"
)

// TestStructSizes checks the Go structs against the sizes the kernel expects
// (which are baked into the ioctl numbers).
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"uffd_msg", unsafe.Sizeof(uffdMsg{}), sizeofMsg},
		{"uffdio_api", unsafe.Sizeof(uffdioAPI{}), sizeofAPI},
		{"uffdio_range", unsafe.Sizeof(uffdioRange{}), sizeofRange},
		{"uffdio_register", unsafe.Sizeof(uffdioRegister{}), sizeofRegister},
		{"uffdio_copy", unsafe.Sizeof(uffdioCopy{}), sizeofCopy},
		{"uffdio_zeropage", unsafe.Sizeof(uffdioZeropage{}), sizeofZeropage},
		{"uffdio_writeprotect", unsafe.Sizeof(uffdioWriteprotect{}), sizeofWriteprotect},
		// userfaultfd-go derives these through cgo from the system header.
		{"uffd_msg (cgo)", unsafe.Sizeof(constants.UffdMsg{}), sizeofMsg},
		{"uffdio_copy (cgo)", unsafe.Sizeof(constants.UffdioCopy{}), sizeofCopy},
		{"uffdio_register (cgo)", unsafe.Sizeof(constants.UffdioRegister{}), sizeofRegister},
	} {
		if c.got != c.want {
			t.Errorf("sizeof %s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if off := unsafe.Offsetof(uffdMsg{}.Address); off != 16 {
		t.Errorf("offsetof uffd_msg.arg.pagefault.address = %d, want 16", off)
	}
}

// TestIoctlNumbers cross-checks the _IOWR-built numbers with the values
// userfaultfd-go took from <linux/userfaultfd.h>.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"UFFDIO_API", ioctlNumAPI, constants.UFFDIO_API},
		{"UFFDIO_REGISTER", ioctlNumRegister, constants.UFFDIO_REGISTER},
		{"UFFDIO_COPY", ioctlNumCopy, constants.UFFDIO_COPY},
		// Values from the header, computed by hand from _IOR/_IOWR.
		{"UFFDIO_UNREGISTER", ioctlNumUnregister, 0x8010aa01},
		{"UFFDIO_WAKE", ioctlNumWake, 0x8010aa02},
		{"UFFDIO_ZEROPAGE", ioctlNumZeropage, 0xc020aa04},
		{"UFFDIO_WRITEPROTECT", ioctlNumWriteprotect, 0xc018aa06},
		{"USERFAULTFD_IOC_NEW", ioctlNumNew, 0xaa00},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if EventPagefault != constants.UFFD_EVENT_PAGEFAULT || API != constants.UFFD_API ||
		RegisterModeMissing != constants.UFFDIO_REGISTER_MODE_MISSING {
		t.Error("event, API or register-mode constants differ from <linux/userfaultfd.h>")
	}
}
