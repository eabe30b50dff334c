// Package pagemap owns the raw ABI of the PAGEMAP_SCAN ioctl on
// /proc/self/pagemap (Linux >= 6.7): struct pm_scan_arg and struct
// page_region from include/uapi/linux/fs.h, the PM_SCAN_* flags and PAGE_IS_*
// categories, and a File type that owns the descriptor.
//
// PAGEMAP_SCAN walks the page tables of a range once and reports runs of
// pages by category. With userfaultfd async write-protect (UFFD_FEATURE_WP_ASYNC)
// on the range, PAGE_IS_WRITTEN says a page was written since it was last
// write-protected, and the WPMatching flag write-protects the reported pages
// in the same walk: one system call collects and re-arms a dirty set, which
// is what pre-copy dirty tracking wants.
//
// Errors from the ioctl are unix.Errno wrapped with context; test them with
// errors.Is. unsafe is confined to files named *_unsafe.go.
package pagemap
