package precopy

import (
	"math/rand/v2"
	"os"
	"testing"
)

// BenchmarkSumPage hashes pages hot (the same page, in cache) and cold
// (pages spread over 256 MiB, read once each, as a round reads dirty pages),
// next to a plain copy of the same cold pages: the cold hash costs what any
// first read of the page costs, which the send's copy would pay otherwise.
func BenchmarkSumPage(b *testing.B) {
	ps := os.Getpagesize()
	const region = 256 << 20
	mem := make([]byte, region)
	for i := 0; i < len(mem); i += 8 {
		mem[i] = byte(i >> 12)
	}
	n := region / ps
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	dst := make([]byte, ps)
	for _, alg := range []HashAlg{HashXXH3, HashSHA256} {
		b.Run(alg.String()+"/hot", func(b *testing.B) {
			b.SetBytes(int64(ps))
			for b.Loop() {
				sumPage(alg, mem[:ps])
			}
		})
		b.Run(alg.String()+"/cold", func(b *testing.B) {
			b.SetBytes(int64(ps))
			i := 0
			for b.Loop() {
				p := order[i%n]
				sumPage(alg, mem[p*ps:(p+1)*ps])
				i++
			}
		})
	}
	b.Run("memcpy/cold", func(b *testing.B) {
		b.SetBytes(int64(ps))
		i := 0
		for b.Loop() {
			p := order[i%n]
			copy(dst, mem[p*ps:(p+1)*ps])
			i++
		}
	})
}
