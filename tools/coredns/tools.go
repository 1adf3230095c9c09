//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the local node, so pods resolve Services by
// name exactly as they do on a real cluster.
package tools

import (
	_ "github.com/coredns/coredns"
)
