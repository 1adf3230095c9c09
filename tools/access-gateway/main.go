// Command access-gateway lets only the callers that Kubernetes RBAC allows reach a model.
//
// It runs in each serving pod in front of TF Serving (or `tfmaas serve`), which listens on
// loopback only. Every gRPC and REST call must carry "authorization: Bearer <token>"; the token
// is checked with a TokenReview and the call with a SubjectAccessReview on the ModelService, both
// through k8s.io/apiserver's delegating authenticator and authorizer and their caches, so a burst
// of calls with one token costs the API server one review per cache TTL. Allowed calls are
// forwarded unchanged without the token: gRPC by relaying HTTP/2 frames (relay.go), REST through
// a reverse proxy over HTTP/1.1.
//
// A third, unauthenticated listener serves what the cluster itself needs: TF Serving's
// Prometheus metrics passed through at the same path, the gateway's own counters, and probes.
// The NetworkPolicy the operator renders lets only the chart's monitoring namespaces reach it.
//
// The gateway prints "listening grpc=PORT rest=PORT metrics=PORT" once it accepts connections.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type options struct {
	grpcListen, restListen, metricsListen string
	grpcUpstream, restUpstream            string
	namespace, modelService               string
	kubeconfig                            string
	tlsCertFile, tlsKeyFile               string
	metricsPath, readinessPath            string
	authnCacheTTL                         time.Duration
	allowCacheTTL, denyCacheTTL           time.Duration
	reviewTimeout                         time.Duration
	profiling                             bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("access-gateway", flag.ContinueOnError)
	fs.StringVar(&o.grpcListen, "grpc-listen-address", ":8500", "address for gRPC callers")
	fs.StringVar(&o.restListen, "rest-listen-address", ":8501", "address for REST callers")
	fs.StringVar(&o.metricsListen, "metrics-listen-address", ":8502",
		"address of the unauthenticated listener: metrics passthrough, gateway counters, probes")
	fs.StringVar(&o.grpcUpstream, "grpc-upstream", "127.0.0.1:9000", "the model server's gRPC host:port (h2c)")
	fs.StringVar(&o.restUpstream, "rest-upstream", "127.0.0.1:9001", "the model server's REST host:port")
	fs.StringVar(&o.namespace, "namespace", "", "namespace of the guarded ModelService (required)")
	fs.StringVar(&o.modelService, "model-service", "", "name of the guarded ModelService (required)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API server; in-cluster config when empty")
	fs.StringVar(&o.tlsCertFile, "tls-cert-file", "", "serving certificate (tls.crt of a kubernetes.io/tls Secret)")
	fs.StringVar(&o.tlsKeyFile, "tls-private-key-file", "", "serving key (tls.key of the same Secret)")
	fs.StringVar(&o.metricsPath, "metrics-path", "/monitoring/prometheus/metrics",
		"the model server's metrics path, passed through on the metrics listener")
	fs.StringVar(&o.readinessPath, "upstream-readiness-path", "",
		"REST path of the model server whose status /readyz reports; /readyz only checks the gateway when empty")
	fs.DurationVar(&o.authnCacheTTL, "authentication-cache-ttl", 2*time.Minute, "how long a TokenReview answer is cached")
	fs.DurationVar(&o.allowCacheTTL, "authorization-allow-cache-ttl", time.Minute,
		"how long an allowing SubjectAccessReview is cached: a revoked RoleBinding takes effect within it")
	fs.DurationVar(&o.denyCacheTTL, "authorization-deny-cache-ttl", 10*time.Second,
		"how long a denying SubjectAccessReview is cached")
	fs.DurationVar(&o.reviewTimeout, "review-timeout", 10*time.Second, "time limit of one review request")
	fs.BoolVar(&o.profiling, "profiling", false,
		"serve Go's profiles at /debug/pprof/ on the metrics listener (as kube components' --profiling)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.namespace == "" || o.modelService == "":
		return o, errors.New("--namespace and --model-service are required")
	case (o.tlsCertFile == "") != (o.tlsKeyFile == ""):
		return o, errors.New("--tls-cert-file and --tls-private-key-file go together")
	case o.authnCacheTTL < 0 || o.allowCacheTTL < 0 || o.denyCacheTTL < 0 || o.reviewTimeout <= 0:
		return o, errors.New("cache TTLs must not be negative and --review-timeout must be positive")
	}
	return o, nil
}

func clientConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// newGateway builds the delegating authenticator and authorizer (with their caches) on a client
// of the API server that counts the reviews it sends.
func newGateway(o options, config *rest.Config) (*gateway, error) {
	c := &counters{}
	config = rest.CopyConfig(config)
	config.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return countingTransport{next: next, counters: c}
	})
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 3}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                nil, // every call needs a token
		TokenAccessReviewClient:  client.AuthenticationV1(),
		TokenAccessReviewTimeout: o.reviewTimeout,
		WebhookRetryBackoff:      &backoff,
		CacheTTL:                 o.authnCacheTTL,
	}.New()
	if err != nil {
		return nil, err
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(),
		AllowCacheTTL:             o.allowCacheTTL,
		DenyCacheTTL:              o.denyCacheTTL,
		WebhookRetryBackoff:       &backoff,
	}.New()
	if err != nil {
		return nil, err
	}
	return &gateway{
		authn:    authn,
		authz:    authz,
		target:   target{namespace: o.namespace, modelService: o.modelService},
		counters: c,
	}, nil
}

// metricsHandler serves the unauthenticated endpoints: nothing on it runs a model or reveals
// more than the counters TF Serving exposes to Prometheus anyway.
func metricsHandler(o options, g *gateway, upstream http.Handler, rest *url.URL) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+o.metricsPath, upstream)
	mux.HandleFunc("GET /gateway/metrics", g.counters.writeMetrics)
	if o.profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	probe := &http.Client{Timeout: 5 * time.Second, Transport: restTransport()}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.readinessPath == "" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		request, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, rest.JoinPath(o.readinessPath).String(), nil)
		response, err := probe.Do(request)
		if err != nil {
			http.Error(w, "model server not reachable", http.StatusServiceUnavailable)
			return
		}
		_ = response.Body.Close()
		// The model server's own answer decides (TF Serving answers 404 until the label exists).
		w.WriteHeader(response.StatusCode)
	})
	return mux
}

func newServer(handler http.Handler, certificate *servingCertificate) *http.Server {
	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if certificate != nil {
		protocols.SetHTTP2(true)
		server.TLSConfig = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certificate.getCertificate,
		}
	} else {
		// gRPC clients without TLS speak HTTP/2 with prior knowledge (h2c).
		protocols.SetUnencryptedHTTP2(true)
	}
	server.Protocols = &protocols
	return server
}

func run(o options) error {
	config, err := clientConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("API server client: %w", err)
	}
	g, err := newGateway(o, config)
	if err != nil {
		return err
	}
	restURL := &url.URL{Scheme: "http", Host: o.restUpstream}
	restProxy := newProxy(restURL, restTransport())
	ctx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	var certificate *servingCertificate
	if o.tlsCertFile != "" {
		if certificate, err = loadServingCertificate(o.tlsCertFile, o.tlsKeyFile); err != nil {
			return err
		}
		certificate.run(ctx)
	}
	listeners := []struct {
		name        string
		address     string
		handler     http.Handler
		certificate *servingCertificate
	}{
		{"rest", o.restListen, g.guard(restProxy), certificate},
		{"metrics", o.metricsListen, metricsHandler(o, g, restProxy, restURL), nil},
	}
	errs := make(chan error, len(listeners)+1)
	servers := make([]*http.Server, 0, len(listeners))
	grpcListener, err := net.Listen("tcp", o.grpcListen)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	relay := newGRPCRelay(g, o.grpcUpstream, certificate)
	go func() { errs <- relay.serve(grpcListener) }()
	banner := fmt.Sprintf("listening grpc=%d", grpcListener.Addr().(*net.TCPAddr).Port)
	for _, l := range listeners {
		listener, err := net.Listen("tcp", l.address)
		if err != nil {
			return fmt.Errorf("%s listener: %w", l.name, err)
		}
		banner += fmt.Sprintf(" %s=%d", l.name, listener.Addr().(*net.TCPAddr).Port)
		server := newServer(l.handler, l.certificate)
		servers = append(servers, server)
		go func() {
			if l.certificate != nil {
				// The certificate comes from TLSConfig.GetCertificate, so it can change.
				errs <- server.ServeTLS(listener, "", "")
			} else {
				errs <- server.Serve(listener)
			}
		}()
	}
	fmt.Println(banner)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errs:
		return err
	case <-stop:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = grpcListener.Close()
	var drained sync.WaitGroup
	drained.Add(1)
	go func() {
		defer drained.Done()
		relay.shutdown(shutdown)
	}()
	for _, server := range servers {
		_ = server.Shutdown(shutdown)
	}
	drained.Wait()
	return nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		log.Fatalf("access-gateway: %v", err)
	}
	if err := run(o); err != nil {
		log.Fatalf("access-gateway: %v", err)
	}
}
