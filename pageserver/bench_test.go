package pageserver

import (
	"net"
	"testing"

	"github.com/pagewarp/pagewarp/wire"
)

// BenchmarkServe measures serving throughput: a target pulls a whole 64 MiB region with background
// requests of 1024 pages over loopback TCP, a window of 4 in flight, verifying nothing (the client is
// as cheap as it can be, so the figure is the server's ceiling on this machine, client included).
func BenchmarkServe(b *testing.B) {
	const size = 64 << 20
	const pages = size / testPageSize
	const count = wire.MaxPagesPerRequest
	const window = 4
	for _, tc := range []struct {
		name string
		zero bool
	}{{"random", false}, {"zero", true}} {
		b.Run(tc.name, func(b *testing.B) {
			var mem []byte
			if tc.zero {
				mem = make([]byte, size)
			} else {
				mem = randomRegion(pages, 42)
			}
			s := regionServer(b, mem, Options{})
			dial := startServer(b, s, "tcp")
			nc := dial()
			nc.(*net.TCPConn).SetReadBuffer(4 << 20)
			c := newClient(b, nc, wire.FeatureZeroPages|wire.FeaturePageHashes)
			b.SetBytes(size)
			b.ReportAllocs()
			id := uint64(0)
			for b.Loop() {
				next, done := 0, 0
				send := func() {
					id++
					c.mu.Lock()
					c.w.WriteMessage(&wire.Request{ReqID: id, Page: uint64(next), Count: count, Priority: wire.PriorityBackground})
					c.w.Flush()
					c.mu.Unlock()
					next += count
				}
				for next < pages && next < window*count {
					send()
				}
				for done < pages/count {
					m, err := c.r.ReadMessage()
					if err != nil {
						b.Fatal(err)
					}
					if p, ok := m.(*wire.Pages); ok && p.Last() {
						done++
						if next < pages {
							send()
						}
					}
				}
			}
		})
	}
}
