// Package uffdtest holds test helpers for code that needs userfaultfd.
package uffdtest

import (
	"errors"
	"testing"

	"github.com/pagewarp/pagewarp/internal/uffd"
)

// SkipIfUnavailable skips the test when this machine cannot open a
// userfaultfd at all (no kernel support, or every way of opening one is
// denied), saying why. Any other failure to open one fails the test: a
// probe that fails where the feature exists is a bug, not a skip.
func SkipIfUnavailable(t testing.TB) {
	t.Helper()
	u, err := uffd.Open(uffd.OpenOptions{})
	if errors.Is(err, uffd.ErrUnavailable) {
		t.Skipf("no userfaultfd on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
}
