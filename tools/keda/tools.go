//go:build tools

// Package tools pins KEDA, whose operator turns a ModelService's ScaledObject into an HPA and
// whose metrics server answers that HPA's external metric from Prometheus.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
