package precopy

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/wire"
)

// HashAlg names the content hash that identifies a page's content in
// pre-copy: the hash filter compares it with what the target holds, and the
// content index finds duplicate and known pages by it. The values are the
// protocol's (Known.Algorithm).
type HashAlg uint8

const (
	// HashXXH3 is xxh3-128: about 0.1 µs per 4 KiB page. Fast, not
	// cryptographic; see docs/precopy.md for the collision argument.
	HashXXH3 HashAlg = HashAlg(wire.ContentXXH3128)
	// HashSHA256 is SHA-256: about 4 µs per page, for memory whose owner
	// might craft xxh3 collisions.
	HashSHA256 HashAlg = HashAlg(wire.ContentSHA256)
)

// ParseHashAlg maps "xxh3" (or "xxh3-128") and "sha256" to a HashAlg.
func ParseHashAlg(s string) (HashAlg, error) {
	switch s {
	case "", "xxh3", "xxh3-128":
		return HashXXH3, nil
	case "sha256", "sha-256":
		return HashSHA256, nil
	}
	return 0, fmt.Errorf("unknown content hash %q (want xxh3 or sha256)", s)
}

func (a HashAlg) String() string {
	switch a {
	case HashXXH3:
		return "xxh3-128"
	case HashSHA256:
		return "sha256"
	}
	return fmt.Sprintf("hash(%d)", uint8(a))
}

// Sum is a page's content hash: xxh3-128 fills the first 16 bytes
// (big-endian, high half first), SHA-256 all 32.
type Sum [32]byte

// sumPage hashes one page and returns its content sum and its xxh3-64 (the
// wire's per-page check). For xxh3-128 the two come from one pass: for
// inputs over 240 bytes the low 64 bits of xxh3-128 are xxh3-64 (tested in
// package wire).
func sumPage(alg HashAlg, page []byte) (s Sum, check uint64) {
	if alg == HashSHA256 {
		s = sha256.Sum256(page)
		return s, xxh3.Hash(page)
	}
	h := xxh3.Hash128(page)
	binary.BigEndian.PutUint64(s[0:], h.Hi)
	binary.BigEndian.PutUint64(s[8:], h.Lo)
	if len(page) <= 240 {
		return s, xxh3.Hash(page)
	}
	return s, h.Lo
}

// sumFromWire converts a Known entry to a Sum.
func sumFromWire(alg HashAlg, b []byte) (s Sum) {
	copy(s[:], b)
	return s
}

// appendSum appends the wire form of s (16 or 32 bytes).
func appendSum(dst []byte, alg HashAlg, s Sum) []byte {
	return append(dst, s[:wire.ContentHashLen(uint8(alg))]...)
}
