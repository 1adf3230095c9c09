//go:build tools

// Package tools pins MinIO so `go build github.com/minio/minio` builds the same server every time.
package tools

import _ "github.com/minio/minio"
