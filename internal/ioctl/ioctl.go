// Package ioctl builds ioctl request numbers the way the kernel's _IO,
// _IOR, _IOW and _IOWR macros do (include/uapi/asm-generic/ioctl.h, the
// layout of x86 and arm64), for the ABI packages (internal/uffd,
// internal/pagemap) that write out their structs and numbers.
package ioctl

const (
	nrBits   = 8
	typeBits = 8
	sizeBits = 14

	nrShift   = 0
	typeShift = nrShift + nrBits
	sizeShift = typeShift + typeBits
	dirShift  = sizeShift + sizeBits

	dirNone  = 0
	dirWrite = 1
	dirRead  = 2
)

// IOC is _IOC(dir, type, nr, size).
func IOC(dir, typ, nr, size uintptr) uintptr {
	return dir<<dirShift | typ<<typeShift | nr<<nrShift | size<<sizeShift
}

// IO is _IO(type, nr): no argument.
func IO(typ, nr uintptr) uintptr { return IOC(dirNone, typ, nr, 0) }

// IOR is _IOR(type, nr, size): the kernel writes the argument.
func IOR(typ, nr, size uintptr) uintptr { return IOC(dirRead, typ, nr, size) }

// IOW is _IOW(type, nr, size): the kernel reads the argument.
func IOW(typ, nr, size uintptr) uintptr { return IOC(dirWrite, typ, nr, size) }

// IOWR is _IOWR(type, nr, size): both.
func IOWR(typ, nr, size uintptr) uintptr { return IOC(dirRead|dirWrite, typ, nr, size) }
