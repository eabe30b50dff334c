package pagemap

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by the errors of Probe and Scan when the kernel
// has no PAGEMAP_SCAN ioctl (it answers ENOTTY).
var ErrUnsupported = errors.New("PAGEMAP_SCAN needs Linux 6.7+")

// ErrClosed is returned by methods of a File that was closed.
var ErrClosed = errors.New("pagemap: file closed")

// File owns one open /proc/self/pagemap descriptor. Create one with Open;
// release it with Close. A File is safe for concurrent use (every method is
// one system call), but Close must not race with the others.
type File struct {
	fd int
}

// Open opens /proc/self/pagemap for PAGEMAP_SCAN. It does not check that the
// ioctl exists; Probe does.
func Open() (*File, error) {
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc/self/pagemap: %w", err)
	}
	return &File{fd: fd}, nil
}

// Close closes the descriptor. A second Close returns ErrClosed.
func (f *File) Close() error {
	if f.fd < 0 {
		return ErrClosed
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return err
}

// Scan issues one PAGEMAP_SCAN over the pages of [start, end) (start page
// aligned; end is rounded up to a page by the kernel) and returns the
// regions the kernel filled into vec (vec[:n]) and walkEnd, the address
// where the walk stopped.
//
// A page matches when each category in categoryMask matches, at least one
// in anyofMask matches (when anyofMask is not 0), where a category in
// invertedMask matches when the page does not have it. Matching pages are
// reported in runs with their categories restricted to returnMask, and with
// flags&WPMatching they are write-protected in the same walk.
//
// The kernel stops early when vec is full (the pages after the last region
// are neither reported nor write-protected); walkEnd < end then, and the
// caller scans again from walkEnd. With an empty vec nothing is reported and
// the walk covers the whole range (useful with WPMatching alone).
//
// Errors wrap unix.Errno: ENOTTY (together with ErrUnsupported) on kernels
// before 6.7, EINVAL for bad arguments (unknown bits, unaligned start, a
// scan that neither reports nor protects), EPERM when flags has CheckWPAsync
// and a VMA of the range is not registered for async write-protect, EFAULT
// for a range the kernel could not walk or write back.
func (f *File) Scan(start, end uintptr, flags, categoryMask, anyofMask, invertedMask, returnMask uint64, vec []Region) (regions []Region, walkEnd uintptr, err error) {
	if f.fd < 0 {
		return nil, 0, ErrClosed
	}
	a := pmScanArg{
		Size:              sizeofPMScanArg,
		Flags:             flags,
		Start:             uint64(start),
		End:               uint64(end),
		CategoryInverted:  invertedMask,
		CategoryMask:      categoryMask,
		CategoryAnyofMask: anyofMask,
		ReturnMask:        returnMask,
	}
	n, err := ioctlScan(f.fd, &a, vec)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) {
			return nil, 0, fmt.Errorf("pagemap_scan %#x-%#x: %w: %w", start, end, ErrUnsupported, err)
		}
		return nil, 0, fmt.Errorf("pagemap_scan %#x-%#x flags %#x: %w", start, end, flags, err)
	}
	if n < 0 || n > len(vec) {
		return nil, 0, fmt.Errorf("pagemap_scan %#x-%#x: kernel returned %d regions for a vector of %d", start, end, n, len(vec))
	}
	return vec[:n], uintptr(a.WalkEnd), nil
}

// Probe checks that this kernel has the PAGEMAP_SCAN ioctl. It returns nil
// when it does, an error wrapping ErrUnsupported (and unix.ENOTTY) when the
// kernel is older than 6.7, and any other error (no /proc, say) as is.
func Probe() error {
	f, err := Open()
	if err != nil {
		return err
	}
	defer f.Close()
	// Scan one page of the process's own memory: a scan that reports
	// presence is valid on every kernel with the ioctl.
	var vec [1]Region
	page := uintptr(os.Getpagesize())
	start := uintptr(0) // nothing is mapped at 0 (vm.mmap_min_addr)
	if _, _, err := f.Scan(start, start+page, 0, 0, 0, 0, PageIsPresent, vec[:]); err != nil {
		return err
	}
	return nil
}
