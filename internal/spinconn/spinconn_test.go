package spinconn

import (
	"io"
	"net"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A spinning Reader returns bytes written while it spins and bytes written after it parked,
// reports EOF, and Readable tells whether bytes wait.
func TestReader(t *testing.T) {
	a, b := tcpPair(t)
	r := NewReader(b)
	r.SetSpin(50 * time.Millisecond)
	if r.Readable() {
		t.Fatal("readable with nothing sent")
	}
	go func() {
		time.Sleep(time.Millisecond) // within the spin
		a.Write([]byte("spun"))
		time.Sleep(150 * time.Millisecond) // after it parked
		a.Write([]byte("parked"))
		time.Sleep(10 * time.Millisecond)
		a.Close()
	}()
	buf := make([]byte, 16)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "spun" {
		t.Fatalf("first read %q, %v", buf[:n], err)
	}
	n, err = io.ReadFull(r, buf[:6])
	if err != nil || string(buf[:n]) != "parked" {
		t.Fatalf("second read %q, %v", buf[:n], err)
	}
	if n, err = r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after close: %d, %v, want EOF", n, err)
	}
}

func TestReadableAndConn(t *testing.T) {
	a, b := tcpPair(t)
	r := NewReader(b)
	a.Write([]byte("x"))
	deadline := time.Now().Add(5 * time.Second)
	for !r.Readable() {
		if time.Now().After(deadline) {
			t.Fatal("never readable")
		}
		time.Sleep(time.Millisecond)
	}
	c := Conn{Conn: b, R: r}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil || buf[0] != 'x' {
		t.Fatalf("Conn.Read %q, %v", buf, err)
	}
	// A connection without a descriptor never spins and is never readable by polling.
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	pr := NewReader(p2)
	pr.SetSpin(time.Second)
	if pr.spin.Load() != 0 || pr.Readable() {
		t.Fatal("net.Pipe reader spins or polls")
	}
	go p1.Write([]byte("y"))
	if _, err := pr.Read(buf); err != nil || buf[0] != 'y' {
		t.Fatalf("pipe read %q, %v", buf, err)
	}
}
