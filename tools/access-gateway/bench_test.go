package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// reviewServer answers every TokenReview as alice and every SubjectAccessReview as allowed, as
// a stand-in API server for measuring the gateway's own path with its real caches.
func reviewServer(t testing.TB) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review map[string]any
		_ = json.NewDecoder(r.Body).Decode(&review)
		switch review["kind"] {
		case "TokenReview":
			review["status"] = map[string]any{"authenticated": true, "user": map[string]any{"username": "alice"}}
		default:
			review["status"] = map[string]any{"allowed": true}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	}))
}

// BenchmarkGRPCCall is one unary gRPC call with warm caches, through the relay and straight to
// the model server: the difference in cpu-us/op is the gateway's own CPU per call (client and
// model server run in this process too). Run with -cpuprofile to see where it goes.
func BenchmarkGRPCCall(b *testing.B) {
	api := reviewServer(b)
	defer api.Close()
	g, err := newGateway(options{
		namespace: "default", modelService: "m", authnCacheTTL: 1e12, allowCacheTTL: 1e12,
		denyCacheTTL: 1e10, reviewTimeout: 1e10,
	}, &rest.Config{Host: api.URL})
	if err != nil {
		b.Fatal(err)
	}
	model := startModelServer(b)
	_, relayed := startRelay(b, g, model.address)
	payload := bytes.Repeat([]byte{1}, 64)
	for _, route := range []struct{ name, address string }{{"direct", model.address}, {"gateway", relayed}} {
		b.Run(route.name, func(b *testing.B) {
			client := h2cClient()
			call := func() {
				if status, message := grpcCall(b, client, route.address, predictMethod, "good", payload); status != "0" {
					b.Fatalf("grpc-status %s %q", status, message)
				}
			}
			call()
			b.ResetTimer()
			before := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
			b.ReportMetric(float64((processCPU()-before).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
	if reviews := g.counters.tokenReviews.Load() + g.counters.accessReviews.Load(); reviews != 2 {
		b.Errorf("%d reviews: the caches did not hold", reviews)
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
