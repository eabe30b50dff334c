package uffd

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRawWriteProtect runs the write-protect cycle with the raw calls: a
// writer blocks on a protected page, RawMsg decodes its fault, and
// RawWriteProtect un-protects and wakes it.
func TestRawWriteProtect(t *testing.T) {
	u := openOrSkip(t, OpenOptions{Features: FeatureWPUnpopulated})
	mem := mmapRegion(t, 4)
	base := addrOf(mem)
	if _, err := u.Register(base, uint64(len(mem)), RegisterModeWP); err != nil {
		t.Fatal(err)
	}
	if errno := RawWriteProtect(u.Int(), base, uint64(len(mem)), true); errno != 0 {
		t.Fatalf("raw write-protect: %v", errno)
	}
	done := make(chan struct{})
	go func() {
		// A plain store, in Go code the runtime can preempt while it waits
		// in the fault (a race-detector atomic could not be, and a GC
		// starting meanwhile would wait for it while this test waits too).
		*(*uint64)(unsafe.Pointer(&mem[2*pageSize+8])) = 7
		close(done)
	}()
	buf := make([]byte, MsgBufSize(1))
	var n int
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if n, err = unix.Read(u.Int(), buf); err == nil {
			break
		}
		if err != unix.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("read fault: %v", err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	if n != MsgBufSize(1) {
		t.Fatalf("read %d bytes", n)
	}
	event, addr := RawMsg(buf)
	if event != EventPagefault || addr&^uintptr(pageSize-1) != base+2*uintptr(pageSize) {
		t.Fatalf("RawMsg = event %#x at %#x, want a pagefault in page 2 (%#x)", event, addr, base+2*uintptr(pageSize))
	}
	select {
	case <-done:
		t.Fatal("write completed on a protected page")
	default:
	}
	if errno := RawWriteProtect(u.Int(), base+2*uintptr(pageSize), uint64(pageSize), false); errno != 0 {
		t.Fatalf("raw un-protect: %v", errno)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writer not woken by the un-protect")
	}
	if errno := RawUnregister(u.Int(), base, uint64(len(mem))); errno != 0 {
		t.Fatalf("raw unregister: %v", errno)
	}
	if errno := RawWriteProtect(u.Int(), base, uint64(len(mem)), true); errno != unix.ENOENT {
		t.Errorf("write-protect after unregister: %v, want ENOENT", errno)
	}
}
