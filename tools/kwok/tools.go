//go:build tools

// Package tools pins kwok, the upstream node simulator: the operator benchmark and its CI test
// run many fake nodes whose pods become Ready (and whose training pods finish) without any
// container runtime.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
