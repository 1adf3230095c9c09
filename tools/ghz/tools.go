//go:build tools

// Package tools pins ghz, the gRPC load generator the serving benchmark drives: a native
// client, so the load it puts on the two cores the server shares is small and steady.
package tools

import (
	_ "github.com/bojand/ghz/cmd/ghz"
)
