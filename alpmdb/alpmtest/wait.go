package alpmtest

import (
	"cmp"
	"slices"
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test naming what when it still does not after d.
// It polls often at first and then every half second at most (a daemon's API is not hammered), and
// returns how long it took.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start, pause := time.Now(), 10*time.Millisecond
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Millisecond)
	}
	return time.Since(start)
}

// Median is the middle of xs, the upper of the two middle ones for an even count: always one run that
// was measured. xs is not changed.
func Median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Percentile is the p-th percentile of xs (nearest rank); xs is not changed.
func Percentile[T cmp.Ordered](xs []T, p int) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}
