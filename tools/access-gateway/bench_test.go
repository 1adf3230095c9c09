package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// grpcEcho answers every call as a unary gRPC method would: one message, then OK trailers.
func grpcEcho(t testing.TB) *url.URL {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	server := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(body)
		w.Header().Set("Grpc-Status", "0")
	})}
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(func() { _ = server.Close() })
	return &url.URL{Scheme: "http", Host: listener.Addr().String()}
}

// BenchmarkGRPCCallThroughGateway is one unary gRPC call through guard and proxy, warm caches.
// Run with -cpuprofile to see where the gateway's CPU per call goes.
func BenchmarkGRPCCallThroughGateway(b *testing.B) {
	api := reviewServer(b)
	defer api.Close()
	g, err := newGateway(options{
		namespace: "default", modelService: "m", authnCacheTTL: 1e12, allowCacheTTL: 1e12,
		denyCacheTTL: 1e10, reviewTimeout: 1e10,
	}, &rest.Config{Host: api.URL})
	if err != nil {
		b.Fatal(err)
	}
	upstream := grpcEcho(b)
	front := httptest.NewUnstartedServer(g.guard(grpcAPI, newProxy(grpcAPI, upstream, h2cTransport())))
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP1(true)
	front.Config.Protocols = &protocols
	front.Start()
	defer front.Close()
	client := &http.Client{Transport: h2cTransport()}
	payload := bytes.Repeat([]byte{1}, 64)
	call := func() {
		request, _ := http.NewRequest("POST", front.URL+"/tensorflow.serving.PredictionService/Predict", bytes.NewReader(payload))
		request.Header.Set("Content-Type", "application/grpc")
		request.Header.Set("Authorization", "Bearer good")
		response, err := client.Do(request)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, response.Body)
		_ = response.Body.Close()
		if response.Trailer.Get("Grpc-Status") != "0" {
			b.Fatalf("status %d trailers %v", response.StatusCode, response.Trailer)
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
	b.StopTimer()
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
