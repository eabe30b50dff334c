package bench

import (
	"math/rand/v2"
	"sync"
	"time"
)

// TouchResult summarises a touching workload.
type TouchResult struct {
	Pages    int           // pages touched
	Checksum uint64        // xor-fold of one word of every page touched
	Elapsed  time.Duration // wall time of the whole workload
}

// TouchRandom reads every page of mem once, in a random order (a
// permutation fixed by seed), split across threads goroutines that each
// take a contiguous share of the permutation. The caller must leave a P for
// each thread (faulthandler.ReserveProcs).
func TouchRandom(mem []byte, pageSize, threads int, seed uint64) TouchResult {
	pages := len(mem) / pageSize
	order := make([]uint32, pages)
	for i := range order {
		order[i] = uint32(i)
	}
	r := rand.New(rand.NewPCG(seed, 0x746f756368))
	r.Shuffle(pages, func(i, j int) { order[i], order[j] = order[j], order[i] })
	if threads < 1 {
		threads = 1
	}
	sums := make([]uint64, threads)
	var wg sync.WaitGroup
	start := time.Now()
	for t := range threads {
		lo, hi := pages*t/threads, pages*(t+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s uint64
			for _, p := range order[lo:hi] {
				off := int(p)*pageSize + int(p%uint32(pageSize/8))*8
				s ^= uint64(mem[off]) | uint64(mem[off+1])<<8 | uint64(p)<<32
			}
			sums[t] = s
		}()
	}
	wg.Wait()
	res := TouchResult{Pages: pages, Elapsed: time.Since(start)}
	for _, s := range sums {
		res.Checksum ^= s
	}
	return res
}
