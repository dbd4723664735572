package alpmtest

import (
	"fmt"
	"runtime"
	"testing"
)

// recorder stands in for the test Require is given, to see whether it
// skipped or failed; both end the goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func callRequire(tools ...string) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(r, tools...)
	}()
	<-done
	return r
}

func TestRequire(t *testing.T) {
	t.Setenv(RequireToolsEnv, "")
	if r := callRequire("alpmtest-no-such-tool"); r.skipped == "" || r.failed != "" {
		t.Errorf("missing tool: skipped %q, failed %q; want a skip", r.skipped, r.failed)
	}
	t.Setenv(RequireToolsEnv, "1")
	if r := callRequire("alpmtest-no-such-tool"); r.failed == "" || r.skipped != "" {
		t.Errorf("missing tool in CI mode: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
	if r := callRequire("sh"); r.failed != "" || r.skipped != "" {
		t.Errorf("present tool: skipped %q, failed %q", r.skipped, r.failed)
	}
}
