package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// gRPC status codes the gateway answers with itself (google.golang.org/grpc/codes).
const (
	grpcPermissionDenied = 7
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// refusal is one way the gateway turns a call away, in both APIs' terms.
type refusal struct {
	grpcCode   int
	httpStatus int
}

var (
	refuseUnauthenticated = refusal{grpcUnauthenticated, http.StatusUnauthorized}
	refuseForbidden       = refusal{grpcPermissionDenied, http.StatusForbidden}
	refuseUnavailable     = refusal{grpcUnavailable, http.StatusServiceUnavailable}
)

// counters are the gateway's own figures, served on the metrics listener.
type counters struct {
	allowed, unauthenticated, forbidden, reviewFailed atomic.Uint64
	tokenReviews, accessReviews                       atomic.Uint64
}

// gateway authenticates and authorizes each call against the API server, then forwards it.
type gateway struct {
	authn    authenticator.Request
	authz    authorizer.Authorizer
	target   target
	counters *counters
}

// guard wraps the REST proxy: only calls the caller's RBAC rules allow reach next. The gRPC
// port makes the same checks in relay.go.
func (g *gateway) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		needed, offered := restPermission(r.Method, r.URL.Path)
		// Authentication comes first so that an anonymous caller learns nothing about which
		// methods exist. On success the authenticator removes the token from the request, so
		// it never reaches the model server.
		answer, authenticated, err := g.authn.AuthenticateRequest(r)
		if err != nil || !authenticated {
			g.counters.unauthenticated.Add(1)
			refuse(w, refuseUnauthenticated, unauthenticatedMessage)
			return
		}
		if !offered {
			g.counters.forbidden.Add(1)
			refuse(w, refuseForbidden, unknownMessage)
			return
		}
		switch g.decide(r.Context(), answer.User, needed) {
		case reviewFailed:
			g.counters.reviewFailed.Add(1)
			refuse(w, refuseUnavailable, reviewFailedMessage)
			return
		case forbidden:
			g.counters.forbidden.Add(1)
			refuse(w, refuseForbidden, g.target.deniedMessage(needed))
			return
		}
		g.counters.allowed.Add(1)
		next.ServeHTTP(w, r)
	})
}

// decision is the gateway's answer to an authenticated call.
type decision int

const (
	allowed decision = iota
	forbidden
	// The API server could not be asked: the caller is told so rather than blamed.
	reviewFailed
)

// decide asks the authorizer (through its cache) whether caller may make a call that needs p.
func (g *gateway) decide(ctx context.Context, caller user.Info, p permission) decision {
	answer, _, err := g.authz.Authorize(ctx, g.target.attributes(caller, p))
	switch {
	case answer == authorizer.DecisionAllow:
		return allowed
	case err != nil:
		return reviewFailed
	}
	return forbidden
}

// refuse answers a REST call the gateway will not forward with TF Serving's JSON error body.
func refuse(w http.ResponseWriter, how refusal, message string) {
	header := w.Header()
	if how.httpStatus == http.StatusUnauthorized {
		header.Set("WWW-Authenticate", `Bearer realm="tfmaas"`)
	}
	header.Set("Content-Type", "application/json")
	w.WriteHeader(how.httpStatus)
	body, _ := json.Marshal(map[string]string{"error": message})
	_, _ = w.Write(body)
}

// encodeGrpcMessage percent-encodes a grpc-message value as the gRPC HTTP/2 spec requires.
func encodeGrpcMessage(message string) string {
	const hex = "0123456789ABCDEF"
	encoded := make([]byte, 0, len(message))
	for i := 0; i < len(message); i++ {
		c := message[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			encoded = append(encoded, c)
			continue
		}
		encoded = append(encoded, '%', hex[c>>4], hex[c&0xf])
	}
	return string(encoded)
}

// newProxy forwards to the model server at upstream over transport. The bearer token is dropped
// here as well, whatever the authenticator did, so no credential reaches the model server.
func newProxy(upstream *url.URL, transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Header.Del("Authorization")
		},
		Transport: transport,
		// Without a pool every call allocates a fresh 32 KiB copy buffer.
		BufferPool: copyBuffers,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, http.ErrAbortHandler) {
				panic(err)
			}
			refuse(w, refuseUnavailable, "the model server is not reachable")
		},
	}
}

// bufferPool lends the proxies' copy buffers (httputil.BufferPool).
type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte {
	if buffer, ok := p.pool.Get().(*[]byte); ok {
		return *buffer
	}
	return make([]byte, 32<<10)
}

func (p *bufferPool) Put(buffer []byte) { p.pool.Put(&buffer) }

var copyBuffers = &bufferPool{}

// restTransport keeps enough idle HTTP/1.1 connections for a busy pod.
func restTransport() *http.Transport {
	return &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
}

// countingTransport counts the reviews this gateway asks of the API server, which shows
// whether the decision caches work.
type countingTransport struct {
	next     http.RoundTripper
	counters *counters
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/tokenreviews"):
		t.counters.tokenReviews.Add(1)
	case strings.HasSuffix(r.URL.Path, "/subjectaccessreviews"):
		t.counters.accessReviews.Add(1)
	}
	return t.next.RoundTrip(r)
}

// writeMetrics serves the gateway's counters in Prometheus' text format.
func (c *counters) writeMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# HELP tfmaas_gateway_calls_total Calls the access gateway decided, by decision.")
	fmt.Fprintln(w, "# TYPE tfmaas_gateway_calls_total counter")
	for _, row := range []struct {
		decision string
		value    *atomic.Uint64
	}{
		{"allowed", &c.allowed},
		{"unauthenticated", &c.unauthenticated},
		{"forbidden", &c.forbidden},
		{"review_failed", &c.reviewFailed},
	} {
		fmt.Fprintf(w, "tfmaas_gateway_calls_total{decision=%q} %d\n", row.decision, row.value.Load())
	}
	fmt.Fprintln(w, "# HELP tfmaas_gateway_api_reviews_total Reviews sent to the Kubernetes API server (cache misses).")
	fmt.Fprintln(w, "# TYPE tfmaas_gateway_api_reviews_total counter")
	fmt.Fprintf(w, "tfmaas_gateway_api_reviews_total{kind=\"TokenReview\"} %d\n", c.tokenReviews.Load())
	fmt.Fprintf(w, "tfmaas_gateway_api_reviews_total{kind=\"SubjectAccessReview\"} %d\n", c.accessReviews.Load())
}
