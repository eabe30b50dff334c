package pagemap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlScan issues PAGEMAP_SCAN with a.Vec and a.VecLen set from vec and
// returns the number of regions filled. EINTR is retried.
func ioctlScan(fd int, a *pmScanArg, vec []Region) (int, error) {
	if len(vec) > 0 {
		a.Vec = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
		a.VecLen = uint64(len(vec))
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlNumScan, uintptr(unsafe.Pointer(a)))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return 0, errno
		}
	}
}
