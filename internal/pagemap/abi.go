package pagemap

import (
	"structs"

	"github.com/pagewarp/pagewarp/internal/ioctl"
)

// Flags of pm_scan_arg.flags (PM_SCAN_*), from include/uapi/linux/fs.h.
const (
	// WPMatching is PM_SCAN_WP_MATCHING: write-protect the pages the scan
	// matches (and reports), in the same page-table walk. The range must be
	// registered with userfaultfd in write-protect mode, UFFD_FEATURE_WP_ASYNC.
	WPMatching = 1 << 0
	// CheckWPAsync is PM_SCAN_CHECK_WPASYNC: fail with EPERM, before
	// touching anything, if some VMA of the range is not registered with
	// async userfaultfd write-protect.
	CheckWPAsync = 1 << 1
)

// Page categories (PAGE_IS_*), used in the masks of pm_scan_arg and reported
// in page_region.categories, from include/uapi/linux/fs.h.
const (
	PageIsWPAllowed = 1 << 0 // PAGE_IS_WPALLOWED: the VMA is registered for async uffd-wp
	PageIsWritten   = 1 << 1 // PAGE_IS_WRITTEN: written since it was last write-protected
	PageIsFile      = 1 << 2 // PAGE_IS_FILE: file-backed (or shared)
	PageIsPresent   = 1 << 3 // PAGE_IS_PRESENT: in memory
	PageIsSwapped   = 1 << 4 // PAGE_IS_SWAPPED: swapped out
	PageIsPFNZero   = 1 << 5 // PAGE_IS_PFNZERO: mapped to the shared zero page
	PageIsHuge      = 1 << 6 // PAGE_IS_HUGE: part of a huge page (THP or hugetlb)
	PageIsSoftDirty = 1 << 7 // PAGE_IS_SOFT_DIRTY: soft-dirty bit set

	// categories is every PAGE_IS_* bit this package knows (PM_SCAN_CATEGORIES).
	categories = PageIsWPAllowed | PageIsWritten | PageIsFile | PageIsPresent |
		PageIsSwapped | PageIsPFNZero | PageIsHuge | PageIsSoftDirty
	// flags is every PM_SCAN_* bit (PM_SCAN_FLAGS).
	flags = WPMatching | CheckWPAsync
)

// Region is analogous to struct page_region from include/uapi/linux/fs.h: the
// pages [Start, End) (addresses, End exclusive) share the categories
// Categories (restricted to the scan's return mask).
type Region struct {
	_          structs.HostLayout
	Start      uint64
	End        uint64
	Categories uint64
}

// pmScanArg is analogous to struct pm_scan_arg from include/uapi/linux/fs.h.
type pmScanArg struct {
	_                 structs.HostLayout
	Size              uint64 // sizeof(struct pm_scan_arg), checked by the kernel
	Flags             uint64 // PM_SCAN_*
	Start             uint64 // first address, page aligned
	End               uint64 // end of the range (exclusive)
	WalkEnd           uint64 // written by the kernel: where the walk stopped
	Vec               uint64 // address of a page_region array
	VecLen            uint64 // its length in elements
	MaxPages          uint64 // stop after this many pages (0: no limit)
	CategoryInverted  uint64 // categories that match when 0 rather than 1
	CategoryMask      uint64 // a page is skipped if any of these does not match
	CategoryAnyofMask uint64 // a page is skipped if none of these matches (0: no test)
	ReturnMask        uint64 // categories reported in page_region.categories
}

// Struct sizes as the kernel sees them; asserted against unsafe.Sizeof in tests.
const (
	sizeofRegion    = 24
	sizeofPMScanArg = 96
)

// pagemapIOC is the ioctl type of /proc/<pid>/pagemap ('f', shared with the
// other file ioctls of include/uapi/linux/fs.h).
const pagemapIOC = 'f'

// ioctlNumScan is PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg), Linux >= 6.7.
var ioctlNumScan = ioctl.IOWR(pagemapIOC, 16, sizeofPMScanArg)
