package uffd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnavailable is wrapped by Open's error when no way of opening a
// userfaultfd is allowed to this process. The message says which fix applies.
var ErrUnavailable = errors.New("userfaultfd unavailable")

// OpenOptions selects how Open creates the descriptor.
type OpenOptions struct {
	// Features are the UFFD_FEATURE_* bits to request. Open fails if the
	// kernel does not offer all of them.
	Features uint64
	// UserModeOnly forces UFFD_USER_MODE_ONLY. Without it Open tries a full
	// descriptor first and falls back to user-mode-only when that is denied.
	UserModeOnly bool
	// Blocking leaves the descriptor blocking; by default it is O_NONBLOCK
	// (what an epoll loop wants).
	Blocking bool
}

// Open creates a userfaultfd and performs the UFFDIO_API handshake.
//
// It tries, in order: userfaultfd(2) without UFFD_USER_MODE_ONLY (needs
// CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1); userfaultfd(2) with
// UFFD_USER_MODE_ONLY (Linux >= 5.11, any user); /dev/userfaultfd (Linux >=
// 6.1, whoever may open the device). When all are denied the error wraps
// ErrUnavailable and names the fixes.
func Open(opts OpenOptions) (*FD, error) {
	flags := unix.O_CLOEXEC
	if !opts.Blocking {
		flags |= unix.O_NONBLOCK
	}
	var attempts []string
	type way struct {
		via      string
		userOnly bool
		open     func() (int, error)
	}
	sys := func(f int) func() (int, error) {
		return func() (int, error) {
			r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(f), 0, 0)
			if errno != 0 {
				return -1, errno
			}
			return int(r), nil
		}
	}
	var ways []way
	if !opts.UserModeOnly {
		ways = append(ways, way{"userfaultfd(2)", false, sys(flags)})
	}
	ways = append(ways, way{"userfaultfd(2) with UFFD_USER_MODE_ONLY", true, sys(flags | UserModeOnly)})
	devFlags := flags
	if opts.UserModeOnly {
		devFlags |= UserModeOnly
	}
	ways = append(ways, way{"/dev/userfaultfd", opts.UserModeOnly, func() (int, error) {
		dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		defer unix.Close(dev)
		return ioctlNew(dev, devFlags)
	}})

	var last error
	for _, w := range ways {
		fd, err := w.open()
		if err != nil {
			attempts = append(attempts, fmt.Sprintf("%s: %v", w.via, err))
			last = err
			if errors.Is(err, unix.ENOSYS) && w.via != "/dev/userfaultfd" {
				// No userfaultfd(2) at all: the device cannot help either.
				break
			}
			continue
		}
		u := &FD{fd: fd, userOnly: w.userOnly, via: w.via}
		if err := u.handshake(opts.Features); err != nil {
			u.Close()
			return nil, err
		}
		return u, nil
	}
	return nil, fmt.Errorf("%w: %s (%s): %w", ErrUnavailable, strings.Join(attempts, "; "), fix(last), last)
}

// fix says what an operator can do about the last open failure.
func fix(err error) string {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return "the kernel has no userfaultfd: build it with CONFIG_USERFAULTFD=y (Linux >= 4.3; pagewarp wants >= 5.11)"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		var b strings.Builder
		b.WriteString("allow it with one of: sysctl -w vm.unprivileged_userfaultfd=1; ")
		b.WriteString("grant CAP_SYS_PTRACE; give this user read-write access to /dev/userfaultfd (Linux >= 6.1); ")
		b.WriteString("or run on Linux >= 5.11, where UFFD_USER_MODE_ONLY needs no privilege")
		if v, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd"); err == nil {
			fmt.Fprintf(&b, " (vm.unprivileged_userfaultfd is %s now)", strings.TrimSpace(string(v)))
		}
		return b.String()
	case errors.Is(err, unix.ENOENT):
		return "no /dev/userfaultfd and userfaultfd(2) was denied: see vm.unprivileged_userfaultfd"
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "out of file descriptors: raise the limit (ulimit -n)"
	default:
		return "unexpected error"
	}
}

// handshake performs UFFDIO_API asking for want. The kernel reports what it
// supports when asked for zero features, so an unsupported bit is named.
func (u *FD) handshake(want uint64) error {
	a := uffdioAPI{API: API, Features: want}
	if err := ioctlAPI(u.fd, &a); err != nil {
		if errors.Is(err, unix.EINVAL) && want != 0 {
			// Find out what the kernel offers. UFFDIO_API may be called once
			// per descriptor, so probe on a fresh one.
			if have, perr := Probe(); perr == nil {
				return fmt.Errorf("uffdio_api: kernel lacks features %#x (wanted %#x, has %#x): %w", want&^have, want, have, err)
			}
		}
		return fmt.Errorf("uffdio_api features %#x: %w", want, err)
	}
	if a.API != API {
		return fmt.Errorf("uffdio_api: kernel speaks API %#x, want %#x", a.API, API)
	}
	if a.Features&want != want {
		return fmt.Errorf("uffdio_api: kernel lacks features %#x", want&^a.Features)
	}
	u.features = want
	u.available = a.Features
	return nil
}

// Probe opens a throwaway descriptor and returns every feature bit the
// kernel offers (UFFDIO_API with features 0 reports them).
func Probe() (uint64, error) {
	u, err := Open(OpenOptions{})
	if err != nil {
		return 0, err
	}
	defer u.Close()
	return u.available, nil
}
