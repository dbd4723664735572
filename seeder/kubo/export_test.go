package kubo

import "time"

// SetIndexWalkTimeout shortens the index walk's bound for tests.
func SetIndexWalkTimeout(d time.Duration) { indexWalkTimeout = d }
