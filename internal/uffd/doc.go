// Package uffd owns the raw userfaultfd ABI: the structs and ioctl numbers of
// include/uapi/linux/userfaultfd.h, thin ioctl wrappers named like
// golang.org/x/sys/unix, and an FD type that owns one userfaultfd.
//
// What github.com/loopholelabs/userfaultfd-go (v0.1.2) offers is MISSING mode,
// one page per UFFDIO_COPY, constants derived through cgo and a blocking
// handler loop. pagewarp uses that library as the benchmark baseline
// (mapper.Handle) and to cross-check the ioctl numbers in tests; everything
// else lives here, written over golang.org/x/sys/unix:
//
//   - opening with UFFD_USER_MODE_ONLY (unprivileged, Linux >= 5.11) or through
//     /dev/userfaultfd (USERFAULTFD_IOC_NEW, Linux >= 6.1), with an error that
//     names the fix when neither is allowed;
//   - the API handshake with feature negotiation;
//   - UFFDIO_COPY over multi-page ranges with DONTWAKE, UFFDIO_ZEROPAGE,
//     UFFDIO_WAKE, UFFDIO_WRITEPROTECT and write-protect registration;
//   - reading fault events in batches from a non-blocking descriptor.
//
// Errors from ioctls are returned as unix.Errno wrapped with context; test
// them with errors.Is(err, unix.EEXIST) and friends. unsafe is confined to
// files named *_unsafe.go.
//
// An FD is safe for concurrent use: every method is a single system call on
// the descriptor, which the kernel serialises as needed. Close must not race
// with other calls.
package uffd
