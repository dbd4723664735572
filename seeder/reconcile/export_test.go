package reconcile

import "time"

// SetProgressAfter lets tests see the progress line without a long pass.
func SetProgressAfter(d time.Duration) { progressAfter = d }
