package epoll

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWaitReadyWakeClose(t *testing.T) {
	var a, b [2]int
	if err := unix.Pipe2(a[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	if err := unix.Pipe2(b[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	p, err := New(a[0], b[0])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if r, err := p.Wait(10 * time.Millisecond); err != nil || r != 0 {
		t.Fatalf("idle Wait = %b, %v; want a timeout", r, err)
	}
	unix.Write(b[1], []byte{1})
	if r, err := p.Wait(-1); err != nil || r != 0b10 {
		t.Fatalf("Wait = %b, %v; want the second descriptor", r, err)
	}
	unix.Write(a[1], []byte{1})
	if r, err := p.Wait(-1); err != nil || r != 0b11 {
		t.Fatalf("Wait = %b, %v; want both", r, err)
	}
	var buf [1]byte
	unix.Read(a[0], buf[:])
	unix.Read(b[0], buf[:])
	go func() { time.Sleep(10 * time.Millisecond); p.Wake() }()
	if r, err := p.Wait(-1); err != nil || r != 0 {
		t.Fatalf("woken Wait = %b, %v", r, err)
	}
	go func() { time.Sleep(10 * time.Millisecond); p.Close() }()
	if _, err := p.Wait(-1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v, want ErrClosed", err)
	}
	if _, err := New(); err == nil {
		t.Fatal("New with no descriptor succeeded")
	}
}
