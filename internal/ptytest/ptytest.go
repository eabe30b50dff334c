// Package ptytest opens pseudo-terminals for tests of output that behaves
// differently on a terminal.
package ptytest

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Open returns the master and the slave of a new pseudo-terminal, closed
// at the end of the test. It skips the test where the machine has no
// /dev/ptmx.
func Open(t testing.TB) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/ptmx: %v)", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// ReadAll reads what was written to the slave until the slave is closed
// (or 10 s pass), with the terminal's CRLF turned back into LF.
func ReadAll(t testing.TB, master *os.File) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	master.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := master.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	return strings.ReplaceAll(string(out), "\r\n", "\n")
}
