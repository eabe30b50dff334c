package uffd

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// sink keeps the compiler from dropping loads that exist to fault.
var sink atomic.Uint64

// openOrSkip opens a userfaultfd, skipping only when the kernel has none.
func openOrSkip(t *testing.T, opts OpenOptions) *FD {
	t.Helper()
	u, err := Open(opts)
	if errors.Is(err, unix.ENOSYS) {
		t.Skipf("kernel without userfaultfd (CONFIG_USERFAULTFD): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func mmapRegion(t *testing.T, pages int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// waitFault reads one pagefault message, polling the non-blocking descriptor.
func waitFault(t *testing.T, u *FD) Msg {
	t.Helper()
	buf := make([]byte, MsgBufSize(8))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		msgs, err := u.ReadMsgs(nil, buf)
		if errors.Is(err, unix.EAGAIN) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return msgs[0]
	}
	t.Fatal("no fault within 5s")
	return Msg{}
}

func TestMissingFaultCopyAndZeropage(t *testing.T) {
	u := openOrSkip(t, OpenOptions{Features: FeatureThreadID})
	const pages = 16
	mem := mmapRegion(t, pages)
	base := addrOf(mem)
	ioctls, err := u.Register(base, uint64(len(mem)), RegisterModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	if ioctls&(IoctlBitCopy|IoctlBitZeropage|IoctlBitWake) != IoctlBitCopy|IoctlBitZeropage|IoctlBitWake {
		t.Fatalf("registered range allows ioctls %#x, want COPY, ZEROPAGE and WAKE", ioctls)
	}

	// A reader blocks on page 3 until we install pages 2..5 in one COPY.
	got := make(chan byte, 1)
	go func() { got <- loadByte(mem, 3*pageSize+7) }()
	m := waitFault(t, u)
	if m.Event != EventPagefault || m.Address != base+uintptr(3*pageSize) {
		t.Fatalf("fault = %+v, want pagefault at %#x", m, base+uintptr(3*pageSize))
	}
	if m.ThreadID == 0 {
		t.Error("FeatureThreadID negotiated but ptid is 0")
	}
	src := bytes.Repeat([]byte{0xAB}, 4*pageSize)
	n, err := u.Copy(base+uintptr(2*pageSize), src, 0)
	if err != nil || n != len(src) {
		t.Fatalf("Copy = %d, %v", n, err)
	}
	if b := <-got; b != 0xAB {
		t.Fatalf("reader saw %#x after copy, want 0xab", b)
	}

	// A copy over a present page stops there with EEXIST.
	n, err = u.Copy(base+uintptr(1*pageSize), make([]byte, 2*pageSize), CopyModeDontWake)
	if !errors.Is(err, unix.EEXIST) || n != pageSize {
		t.Fatalf("Copy over present page = %d, %v; want %d, EEXIST", n, err, pageSize)
	}

	// Zeropage, then a write to it must allocate (no further uffd fault).
	if _, err := u.Zeropage(base+uintptr(8*pageSize), uint64(4*pageSize), 0); err != nil {
		t.Fatal(err)
	}
	if mem[9*pageSize] != 0 {
		t.Fatal("zero page not zero")
	}
	mem[9*pageSize] = 5
	if mem[9*pageSize] != 5 {
		t.Fatal("write to zero-page-backed page lost")
	}

	// DONTWAKE leaves the faulting thread asleep until Wake.
	done := make(chan byte, 1)
	go func() { done <- loadByte(mem, 12*pageSize) }()
	m = waitFault(t, u)
	if m.Address != base+uintptr(12*pageSize) {
		t.Fatalf("fault at %#x, want page 12", m.Address)
	}
	if _, err := u.Copy(base+uintptr(12*pageSize), bytes.Repeat([]byte{7}, pageSize), CopyModeDontWake); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		// The faulting thread may have retried on its own (a signal); that is
		// allowed, so only check the value.
	case <-time.After(20 * time.Millisecond):
		if err := u.Wake(base+uintptr(12*pageSize), uint64(pageSize)); err != nil {
			t.Fatal(err)
		}
	}
	if b := <-doneOr(done, mem[12*pageSize]); b != 7 {
		t.Fatalf("page 12 = %d, want 7", b)
	}

	if err := u.Unregister(base, uint64(len(mem))); err != nil {
		t.Fatal(err)
	}
	// Unregistered: a missing page reads as zero without any event.
	if mem[15*pageSize] != 0 {
		t.Fatal("unregistered page not zero")
	}
}

func doneOr(c chan byte, v byte) chan byte {
	select {
	case b := <-c:
		r := make(chan byte, 1)
		r <- b
		return r
	default:
		r := make(chan byte, 1)
		r <- v
		return r
	}
}

// TestBatchRead faults several pages from several threads and reads the
// events with one read(2).
func TestBatchRead(t *testing.T) {
	u := openOrSkip(t, OpenOptions{})
	const pages = 8
	mem := mmapRegion(t, pages)
	base := addrOf(mem)
	if _, err := u.Register(base, uint64(len(mem)), RegisterModeMissing); err != nil {
		t.Fatal(err)
	}
	// A goroutine blocked in a userfaultfd fault keeps its P: give the
	// faulting goroutines their own so this one keeps running.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(pages + 2))
	var wg sync.WaitGroup
	for i := range pages {
		wg.Add(1)
		go func() { defer wg.Done(); sink.Add(uint64(mem[i*pageSize])) }()
	}
	seen := map[uintptr]bool{}
	buf := make([]byte, MsgBufSize(64))
	deadline := time.Now().Add(5 * time.Second)
	maxBatch := 0
	for len(seen) < pages && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond) // let several faults queue up
		msgs, err := u.ReadMsgs(nil, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		maxBatch = max(maxBatch, len(msgs))
		for _, m := range msgs {
			seen[m.Address] = true
		}
	}
	if len(seen) != pages {
		t.Fatalf("saw faults on %d pages, want %d", len(seen), pages)
	}
	if _, err := u.Zeropage(base, uint64(len(mem)), 0); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if maxBatch < 2 {
		t.Logf("every read returned one message (threads faulted slowly); batching not exercised")
	}
}

func TestWriteProtect(t *testing.T) {
	u := openOrSkip(t, OpenOptions{Features: FeaturePagefaultFlagWP})
	mem := mmapRegion(t, 4)
	base := addrOf(mem)
	for i := range mem {
		mem[i] = 1 // populate before registering
	}
	if _, err := u.Register(base, uint64(len(mem)), RegisterModeWP); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteProtect(base, uint64(len(mem)), true, false); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { mem[pageSize] = 9; close(done) }()
	m := waitFault(t, u)
	if m.Flags&PagefaultFlagWP == 0 || m.Address != base+uintptr(pageSize) {
		t.Fatalf("fault = %+v, want a WP fault on page 1", m)
	}
	if err := u.WriteProtect(base+uintptr(pageSize), uint64(pageSize), false, false); err != nil {
		t.Fatal(err)
	}
	<-done
	if mem[pageSize] != 9 {
		t.Fatal("write lost after un-protecting")
	}
}

func TestClosedFD(t *testing.T) {
	u := openOrSkip(t, OpenOptions{})
	fd := u.Disown()
	defer unix.Close(fd)
	if _, err := u.Register(0, 0, RegisterModeMissing); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register on disowned FD: %v, want ErrClosed", err)
	}
	if err := u.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// TestUnprivileged re-runs the test binary as user nobody: with
// vm.unprivileged_userfaultfd=0 Open must still succeed through
// UFFD_USER_MODE_ONLY, and a user-mode fault must still be delivered.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("PAGEWARP_UFFD_CHILD") == "1" {
		u, err := Open(OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("opened via %s", u.Via())
		if sysctl, _ := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd"); bytes.HasPrefix(sysctl, []byte("0")) && !u.UserModeOnly() {
			t.Fatalf("unprivileged open with the sysctl at 0 got a full descriptor via %s", u.Via())
		}
		mem := mmapRegion(t, 1)
		if _, err := u.Register(addrOf(mem), uint64(len(mem)), RegisterModeMissing); err != nil {
			t.Fatal(err)
		}
		read := make(chan struct{})
		go func() { sink.Add(uint64(mem[0])); close(read) }()
		waitFault(t, u)
		if _, err := u.Copy(addrOf(mem), make([]byte, pageSize), 0); err != nil {
			t.Fatal(err)
		}
		<-read
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to switch to user nobody; run as root to exercise the unprivileged path")
	}
	// The test binary lives in a directory only root may enter: copy it
	// somewhere nobody can execute it.
	dir, err := os.MkdirTemp("", "pagewarp-uffd-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := dir + "/uffd.test"
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PAGEWARP_UFFD_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

func TestUnavailableErrorNamesFix(t *testing.T) {
	msg := fix(unix.EPERM)
	for _, want := range []string{"vm.unprivileged_userfaultfd", "/dev/userfaultfd", "5.11"} {
		if !bytes.Contains([]byte(msg), []byte(want)) {
			t.Errorf("fix for EPERM %q does not mention %q", msg, want)
		}
	}
}

// loadByte reads b[i] in a function of its own. Sending b[i] on a channel
// directly would make the runtime copy it out of the region while holding
// the channel's lock, so a fault there would block every other user of the
// channel.
//
//go:noinline
func loadByte(b []byte, i int) byte { return b[i] }
