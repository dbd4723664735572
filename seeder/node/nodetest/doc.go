// Package nodetest is the conformance suite every node.Node implementation passes: the in-memory node
// and the kubo backend run the same checks, so tests written against the fake say something true of kubo.
//
// It must never be linked into a production binary.
package nodetest
