package kubo

import "testing"

func TestBitswapRace(t *testing.T) {
	for _, tc := range []struct {
		boxo string
		race bool
	}{
		{"v0.42.1", true}, {"v0.30.0", true}, {"v0.42.2", false}, {"v0.43.0", false},
		{"v0.42.2-0.20260101000000-abcdefabcdef", true}, // a pseudo-version before the release
		{"(devel)", false}, {"", false},
	} {
		if got := bitswapRace(tc.boxo) != ""; got != tc.race {
			t.Errorf("boxo %q: race %v, want %v", tc.boxo, got, tc.race)
		}
	}
}
