//go:build tools

// Package tools pins the Helm CLI so `go build helm.sh/helm/v3/cmd/helm` gives the same binary
// every time.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
