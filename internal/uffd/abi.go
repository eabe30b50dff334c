package uffd

import (
	"structs"

	ioc "github.com/pagewarp/pagewarp/internal/ioctl"
)

// The userfaultfd API, from include/uapi/linux/userfaultfd.h.
const (
	// userfaultfdIOC is the ioctl type of the /dev/userfaultfd device.
	userfaultfdIOC = 0xAA
	// uffdio is the ioctl type of userfaultfd descriptors.
	uffdio = 0xAA

	// API is the only userfaultfd API version (UFFD_API).
	API = 0xAA

	// UserModeOnly is UFFD_USER_MODE_ONLY: faults from kernel mode (a read(2)
	// into the region, say) fail with EFAULT instead of being delivered. It
	// lets an unprivileged process open a userfaultfd when the sysctl
	// vm.unprivileged_userfaultfd is 0 (Linux >= 5.11).
	UserModeOnly = 1

	// ioctl ids (_UFFDIO_*).
	nrRegister     = 0x00
	nrUnregister   = 0x01
	nrWake         = 0x02
	nrCopy         = 0x03
	nrZeropage     = 0x04
	nrMove         = 0x05
	nrWriteprotect = 0x06
	nrContinue     = 0x07
	nrPoison       = 0x08
	nrAPI          = 0x3F
)

// Event types of uffd_msg.event (UFFD_EVENT_*).
const (
	EventPagefault = 0x12
	EventFork      = 0x13
	EventRemap     = 0x14
	EventRemove    = 0x15
	EventUnmap     = 0x16
)

// Pagefault flags (UFFD_PAGEFAULT_FLAG_*).
const (
	PagefaultFlagWrite = 1 << 0
	PagefaultFlagWP    = 1 << 1
	PagefaultFlagMinor = 1 << 2
)

// Feature bits of uffdio_api.features (UFFD_FEATURE_*).
const (
	FeaturePagefaultFlagWP  = 1 << 0
	FeatureEventFork        = 1 << 1
	FeatureEventRemap       = 1 << 2
	FeatureEventRemove      = 1 << 3
	FeatureMissingHugetlbfs = 1 << 4
	FeatureMissingShmem     = 1 << 5
	FeatureEventUnmap       = 1 << 6
	FeatureSigbus           = 1 << 7
	FeatureThreadID         = 1 << 8
	FeatureMinorHugetlbfs   = 1 << 9
	FeatureMinorShmem       = 1 << 10
	FeatureExactAddress     = 1 << 11
	FeatureWPHugetlbfsShmem = 1 << 12
	FeatureWPUnpopulated    = 1 << 13
	FeaturePoison           = 1 << 14
	FeatureWPAsync          = 1 << 15
	FeatureMove             = 1 << 16
)

// Register modes (UFFDIO_REGISTER_MODE_*).
const (
	RegisterModeMissing = 1 << 0
	RegisterModeWP      = 1 << 1
	RegisterModeMinor   = 1 << 2
)

// Mode bits of the range ioctls.
const (
	CopyModeDontWake         = 1 << 0 // UFFDIO_COPY_MODE_DONTWAKE
	CopyModeWP               = 1 << 1 // UFFDIO_COPY_MODE_WP
	ZeropageModeDontWake     = 1 << 0 // UFFDIO_ZEROPAGE_MODE_DONTWAKE
	WriteprotectModeWP       = 1 << 0 // UFFDIO_WRITEPROTECT_MODE_WP
	WriteprotectModeDontWake = 1 << 1 // UFFDIO_WRITEPROTECT_MODE_DONTWAKE
)

// uffdMsg is analogous to struct uffd_msg from include/uapi/linux/userfaultfd.h
// (__packed, 32 bytes). The union arg is kept as its pagefault member, the
// only one pagewarp reads; the others alias the same 24 bytes.
type uffdMsg struct {
	_        structs.HostLayout
	Event    uint8
	_        uint8  // reserved1
	_        uint16 // reserved2
	_        uint32 // reserved3
	Flags    uint64 // arg.pagefault.flags, or arg.remove.start etc.
	Address  uint64 // arg.pagefault.address
	ThreadID uint32 // arg.pagefault.feat.ptid
	_        uint32 // rest of the union
}

// uffdioAPI is analogous to struct uffdio_api.
type uffdioAPI struct {
	_        structs.HostLayout
	API      uint64
	Features uint64
	Ioctls   uint64
}

// uffdioRange is analogous to struct uffdio_range.
type uffdioRange struct {
	_     structs.HostLayout
	Start uint64
	Len   uint64
}

// uffdioRegister is analogous to struct uffdio_register.
type uffdioRegister struct {
	_      structs.HostLayout
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

// uffdioCopy is analogous to struct uffdio_copy.
type uffdioCopy struct {
	_    structs.HostLayout
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64
}

// uffdioZeropage is analogous to struct uffdio_zeropage.
type uffdioZeropage struct {
	_        structs.HostLayout
	Range    uffdioRange
	Mode     uint64
	Zeropage int64
}

// uffdioWriteprotect is analogous to struct uffdio_writeprotect.
type uffdioWriteprotect struct {
	_     structs.HostLayout
	Range uffdioRange
	Mode  uint64
}

// Struct sizes as the kernel sees them; asserted against unsafe.Sizeof in tests.
const (
	sizeofMsg          = 32
	sizeofAPI          = 24
	sizeofRange        = 16
	sizeofRegister     = 32
	sizeofCopy         = 40
	sizeofZeropage     = 32
	sizeofWriteprotect = 24
)

// ioctl numbers.
var (
	ioctlNumNew          = ioc.IO(userfaultfdIOC, 0x00) // USERFAULTFD_IOC_NEW
	ioctlNumAPI          = ioc.IOWR(uffdio, nrAPI, sizeofAPI)
	ioctlNumRegister     = ioc.IOWR(uffdio, nrRegister, sizeofRegister)
	ioctlNumUnregister   = ioc.IOR(uffdio, nrUnregister, sizeofRange)
	ioctlNumWake         = ioc.IOR(uffdio, nrWake, sizeofRange)
	ioctlNumCopy         = ioc.IOWR(uffdio, nrCopy, sizeofCopy)
	ioctlNumZeropage     = ioc.IOWR(uffdio, nrZeropage, sizeofZeropage)
	ioctlNumWriteprotect = ioc.IOWR(uffdio, nrWriteprotect, sizeofWriteprotect)
)

// Bits of uffdio_register.ioctls: the range ioctls the kernel allows on a
// registered range.
const (
	IoctlBitWake         = 1 << nrWake
	IoctlBitCopy         = 1 << nrCopy
	IoctlBitZeropage     = 1 << nrZeropage
	IoctlBitMove         = 1 << nrMove
	IoctlBitWriteprotect = 1 << nrWriteprotect
	IoctlBitContinue     = 1 << nrContinue
	IoctlBitPoison       = 1 << nrPoison
)
